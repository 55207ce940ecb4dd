"""The action router applying actions itself while its worker is the only live one
(service/worker/partitions.py, `ActionRouter._decide`): only once its barriers have passed
every partition, never while a barrier is missing, and back to forwarding when a second
worker appears, after the actions it was applying have finished."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import aio_pika
import pytest

from service.config import Settings
from service.store.membership import Member
from service.topology import topology
from service.worker import partitions
from service.worker.admission import Admission
from service.worker.partitions import BARRIER_HEADER, ActionRouter, Barriers, Ownership, Solo
from service.worker.sequencing import Turn
from tests.unit.fakes import DeliveryChannel, incoming

PARTITIONS = topology(Settings()).partitions


class Channel:
    is_closed = False

    async def ready(self) -> None:
        return None


class Exchange:
    """Confirms every copy; passes each barrier through this worker's consumer, unless
    `lose_barriers` (another worker's consumer holds the partition)."""

    def __init__(
        self,
        barriers: Barriers,
        *,
        lose_barriers: bool = False,
        refuse_barriers: Exception | None = None,
    ) -> None:
        self.barriers = barriers
        self.lose_barriers = lose_barriers
        self.refuse_barriers = refuse_barriers
        self.copies: list[str] = []
        self.barrier_rounds = 0

    async def publish(self, message: aio_pika.Message, routing_key: str) -> None:
        token = (message.headers or {}).get(BARRIER_HEADER)
        if token is None:
            self.copies.append(str(message.message_id))
            return
        if routing_key == "0":
            self.barrier_rounds += 1
        if self.refuse_barriers is not None:
            raise self.refuse_barriers
        if not self.lose_barriers:
            self.barriers.passed(str(token), int(routing_key))


class Courier:
    """Applies an action when its turn comes; the ones named in `held` wait for `release`."""

    def __init__(self) -> None:
        self.admission = Admission(1 << 20)
        self.applied: list[str] = []
        self.held: set[str] = set()
        self.release = asyncio.Event()

    async def serve(self, message: Any, work: Any, **options: Any) -> bool:
        turn: Turn = options["admitted"]
        try:
            if message.message_id in self.held:
                await self.release.wait()
            self.applied.append(message.message_id)
        finally:
            self.admission.release(turn)
        return True


def workers(*ids: str) -> list[Member]:
    return [Member(worker_id, PARTITIONS) for worker_id in ids]


class Setup:
    def __init__(
        self, *, lose_barriers: bool = False, refuse_barriers: Exception | None = None
    ) -> None:
        self.ownership = Ownership("w1", PARTITIONS, lease_seconds=60)
        self.ownership.update(workers("w1"))
        barriers = Barriers()
        self.exchange = Exchange(
            barriers, lose_barriers=lose_barriers, refuse_barriers=refuse_barriers
        )
        self.courier = Courier()
        self.router = ActionRouter(
            topology(Settings()),
            cast(Any, self.courier),
            cast(Any, None),
            lambda: None,
            max_message_bytes=1 << 20,
            transient_retry_seconds=1,
            solo=Solo(self.ownership, barriers),
        )
        self.channel = DeliveryChannel()
        self.tag = 0

        async def opened() -> tuple[Any, Any]:
            return Channel(), self.exchange

        self.router._forwarding.open = opened  # type: ignore[method-assign]

    def action(self, order: int) -> Any:
        self.tag += 1
        return incoming(
            f"a{self.tag}",
            self.channel,
            body=f'{{"id": {order}}}'.encode(),
            delivery_tag=self.tag,
            routing_key="orders.action",
        )

    @property
    def acked(self) -> list[str]:
        return self.channel.acked

    async def route(self, *orders: int) -> None:
        await asyncio.gather(*(self.router.route(self.action(order)) for order in orders))


async def test_alone_the_router_applies_actions_itself_once_its_barriers_passed() -> None:
    setup = Setup()

    await setup.route(1, 2, 3, 1)

    assert setup.router.direct
    assert setup.exchange.barrier_rounds == 1
    assert setup.exchange.copies == []  # nothing forwarded
    assert setup.courier.applied == ["a1", "a2", "a3", "a4"]


async def test_a_barrier_that_does_not_pass_keeps_the_router_forwarding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(partitions, "BARRIER_SECONDS", 0.05)
    setup = Setup(lose_barriers=True)

    await setup.route(1, 2)
    await setup.route(3)

    assert not setup.router.direct
    assert setup.exchange.copies == ["a1", "a2", "a3"]
    assert setup.acked == ["a1", "a2", "a3"]
    assert setup.exchange.barrier_rounds == 1  # not again before the retry pause
    assert setup.courier.applied == []


async def test_a_barrier_the_broker_does_not_take_keeps_the_router_forwarding() -> None:
    """Whatever goes wrong sending barriers, the action is forwarded, not left unacked."""
    setup = Setup(refuse_barriers=RuntimeError("channel closed"))

    await setup.route(1)

    assert not setup.router.direct
    assert setup.exchange.copies == ["a1"]
    assert setup.acked == ["a1"]


async def test_nothing_is_applied_here_before_the_copies_already_forwarded_passed() -> None:
    """Two workers, then one: the router forwards, and goes direct only after a barrier
    round that follows the copies it forwarded."""
    setup = Setup()
    setup.ownership.update(workers("w1", "w2"))
    await setup.route(1, 2)
    assert setup.exchange.copies == ["a1", "a2"]

    setup.ownership.update(workers("w1"))
    await setup.route(1)

    assert setup.router.direct
    assert setup.courier.applied == ["a3"]


async def test_a_second_worker_gets_forwarded_actions_after_the_ones_applied_here() -> None:
    setup = Setup()
    setup.courier.held = {"a1"}
    applying = asyncio.create_task(setup.route(1))
    await asyncio.sleep(0.01)
    assert setup.router.direct
    assert setup.courier.applied == []

    setup.ownership.update(workers("w1", "w2"))
    forwarding = asyncio.create_task(setup.route(2))
    await asyncio.sleep(0.01)
    assert setup.exchange.copies == []  # waits for the action being applied here

    setup.courier.release.set()
    await asyncio.gather(applying, forwarding)
    assert setup.courier.applied == ["a1"]
    assert setup.exchange.copies == ["a2"]
    assert not setup.router.direct


async def test_a_stale_view_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Too old a view of the live workers (MongoDB away) neither starts nor ends applying
    actions here: a worker that joined meanwhile gets nothing from the partitions."""
    now = [0.0]
    setup = Setup()
    setup.ownership = Ownership("w1", PARTITIONS, lease_seconds=1, clock=lambda: now[0])
    setup.ownership.update(workers("w1"))
    setup.router._solo = Solo(setup.ownership, setup.exchange.barriers)
    await setup.route(1)
    assert setup.router.direct

    now[0] = 5.0
    await setup.route(2)
    assert setup.router.direct
    assert setup.courier.applied == ["a1", "a2"]
