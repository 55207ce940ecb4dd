"""Per-order ordering inside one worker.

RabbitMQ delivers a queue's messages in order, but FastStream runs each delivery as its own
task, and tasks reach the handler in any order. `DeliveryGate` admits deliveries of one
channel in delivery-tag order again; `KeyedSequencer` then runs the work for one order
strictly one after another, in admission order, while different orders run concurrently.
Across workers the action queue is single-active-consumer, so one worker at a time holds it.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass
class _Channel:
    next_tag: int = 1
    waiting: dict[int, asyncio.Future[None]] = field(default_factory=dict)


class DeliveryGate:
    """Admits the deliveries of each channel in delivery-tag order.

    Tags on a channel count up from 1 without gaps, so a delivery waits for its predecessor.
    A predecessor that never arrives (it cannot, short of a bug) is given up on after
    `patience` seconds, so nothing waits forever.
    """

    def __init__(self, patience: float = 0.5) -> None:
        self._patience = patience
        self._channels: weakref.WeakKeyDictionary[object, _Channel] = weakref.WeakKeyDictionary()

    async def admit(self, channel: object, tag: int) -> None:
        state = self._channels.get(channel)
        if state is None:  # a new channel (start-up or after a reconnect): tags restart at 1
            state = self._channels[channel] = _Channel()
        if tag > state.next_tag:
            turn = asyncio.get_running_loop().create_future()
            state.waiting[tag] = turn
            try:
                await asyncio.wait_for(asyncio.shield(turn), self._patience)
            except TimeoutError:
                log.warning(
                    "delivery %d waited %.1fs for delivery %d; going ahead",
                    tag,
                    self._patience,
                    state.next_tag,
                )
            finally:
                state.waiting.pop(tag, None)
        state.next_tag = max(state.next_tag, tag + 1)
        successor = state.waiting.get(state.next_tag)
        if successor is not None and not successor.done():
            successor.set_result(None)


class KeyedSequencer:
    """Runs work for the same key one at a time, in the order `run` was called."""

    def __init__(self) -> None:
        self._tails: dict[Hashable, asyncio.Future[None]] = {}

    async def run(self, key: Hashable, work: Callable[[], Awaitable[T]]) -> T:
        previous = self._tails.get(key)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tails[key] = done  # registered before the first await: order is call order
        try:
            if previous is not None:
                await asyncio.shield(previous)
            return await work()
        finally:
            done.set_result(None)
            if self._tails.get(key) is done:
                del self._tails[key]
