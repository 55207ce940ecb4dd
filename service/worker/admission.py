"""Admission: when the courier may start a delivery, and what it holds while it runs.

Every delivery holds its body's size in the worker's byte budget while it runs
(service/budget.py). An ordered delivery (an action) is first admitted in its channel's
delivery-tag order, takes its turn among the admitted ones and runs in its order's line
(service/worker/sequencing.py); it counts as in flight until it is released, so that a
worker shutting down can admit no more and let the admitted ones finish. What a delivery's
result becomes (a reply, a dead letter, a retry, the ack) is the courier's business
(service/worker/delivery.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

from service.budget import ByteBudget
from service.worker.sequencing import Abandoned, Draining, OrderedRunner, Turn

T = TypeVar("T")


class Admission:
    """The byte budget, the per-order gate and turns, and the count of ordered deliveries
    in flight."""

    def __init__(self, max_in_flight_bytes: int) -> None:
        self.sequencing = OrderedRunner()
        self.budget = ByteBudget(max_in_flight_bytes)
        self._ordered_in_flight = 0
        self._ordered_idle = asyncio.Event()
        self._ordered_idle.set()
        self._channels: dict[int, Any] = {}
        """The channel of each admitted ordered delivery, by its turn's id."""

    def hold(self, size: int) -> AbstractAsyncContextManager[None]:
        """Hold `size` bytes of the budget while a delivery runs (waiting for room first)."""
        return self.budget.hold(size)

    async def admit_ordered(self, channel: Any, tag: int) -> Turn | None:
        """Admit an ordered delivery in its channel's delivery-tag order and give it its
        turn, which the caller must `release`. None when it is not admitted (shutting down,
        or its channel closed): it is left unacked, to be requeued in its place when the
        channel closes."""
        try:
            await self.sequencing.gate.admit(channel, tag)
        except (Draining, Abandoned):
            return None
        return self.admitted(channel)

    def admitted(self, channel: Any) -> Turn:
        """The turn of an ordered delivery that its caller admitted in order itself (the
        action router, applying actions in its own delivery order: service/worker/
        partitions.py); taken synchronously, so the order of calls is the order of turns."""
        self._ordered_in_flight += 1
        self._ordered_idle.clear()
        turn = self.sequencing.turn()
        self._channels[id(turn)] = channel
        return turn

    async def admit_in_order(self, channel: Any, tag: int) -> bool:
        """Return True once every earlier delivery of `channel` was admitted (and so counts
        as in flight), without taking a turn; False when the channel closed or the worker
        is shutting down."""
        try:
            await self.sequencing.gate.admit(channel, tag)
        except (Draining, Abandoned):
            return False
        return True

    async def idle(self) -> None:
        """Return when no admitted ordered delivery is in flight."""
        await self._ordered_idle.wait()

    async def in_turn(
        self, turn: Turn, body: dict[str, Any], work: Callable[[], Awaitable[T]]
    ) -> T:
        """Run `work` in the line of the order `body` names, after the order's earlier
        admitted deliveries."""
        return await self.sequencing.run(turn, body, work)

    def release(self, turn: Turn) -> None:
        """An admitted ordered delivery is done (whatever became of it)."""
        turn.release()
        self._channels.pop(id(turn), None)
        self._ordered_in_flight -= 1
        if not self._ordered_in_flight:
            self._ordered_idle.set()

    async def drain_ordered(self, grace: float) -> None:
        """Shutting down: admit no more ordered deliveries and let the admitted ones finish,
        so that closing the channel hands the rest, in order, to the next active consumer."""
        self.sequencing.gate.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ordered_idle.wait(), grace)

    async def drain_channel(self, channel: Any, grace: float) -> None:
        """Handing one channel over: admit no more of its deliveries and let its admitted
        ones finish (bounded by `grace` seconds)."""
        self.sequencing.gate.close_channel(channel)
        deadline = asyncio.get_running_loop().time() + grace
        while any(held is channel for held in self._channels.values()):
            if asyncio.get_running_loop().time() > deadline:
                return
            await asyncio.sleep(0.02)
