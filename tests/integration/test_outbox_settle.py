"""Published events leave their outbox in the write the rollup applier makes anyway (one
write of the order for both), or, when no applier takes them, by the relay after
`settle_seconds`; in between, the relay does not publish them again."""

from __future__ import annotations

import asyncio
import itertools
import json
from datetime import UTC, datetime, timedelta

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from schemas.commands import UpdateMetadata, UpdateStatus
from service.application.delivery import Delivery
from service.application.usecases import OrderService
from service.store.client import ORDERS, Document
from service.store.outbox import OutboxRelay, PublishedEvents
from service.store.rollups.applier import RollupApplier
from service.store.rollups.build import ensure_rollups
from service.store.rollups.schema import ensure_rollup_indexes
from tests.e2e.waiting import eventually
from tests.integration.builders import place_order
from tests.integration.conftest import RecordingPublisher, order_service

NO_DELIVERY = Delivery()
WITH_OUTBOX = {"outbox.0": {"$exists": True}}


@pytest.fixture
async def settling(
    db: AsyncDatabase[Document], publisher: RecordingPublisher
) -> tuple[OutboxRelay, OrderService]:
    """Built rollups, and a relay that leaves published events for the applier (for a
    minute: only an applier removes them in a test)."""
    await ensure_rollup_indexes(db, "EUR")
    await ensure_rollups(db, "EUR")
    relay = OutboxRelay(db, publisher, sweep_seconds=60, grace_seconds=60, settle_seconds=60)
    return relay, order_service(db, relay)


async def _orders_updated(client: AsyncMongoClient[Document]) -> int:
    status = await client.admin.command("serverStatus")
    return int(status["metrics"]["document"]["updated"])


async def test_the_applier_removes_published_events_in_the_write_that_takes_the_deltas(
    db: AsyncDatabase[Document],
    client: AsyncMongoClient[Document],
    publisher: RecordingPublisher,
    settling: tuple[OutboxRelay, OrderService],
) -> None:
    relay, orders = settling
    placed = await asyncio.gather(*(orders.place(place_order(), NO_DELIVERY) for _ in range(20)))
    assert len(publisher.published) == 20
    assert await db[ORDERS].count_documents(WITH_OUTBOX) == 20  # published, not yet removed
    assert len(relay.published) == 20

    applier = RollupApplier(client, db, currency="EUR", published=relay.published)
    before = await _orders_updated(client)
    assert await applier.apply_once() == 20
    updated = await _orders_updated(client) - before

    assert await db[ORDERS].count_documents(WITH_OUTBOX) == 0
    assert await db[ORDERS].count_documents({"rollups_pending.0": {"$exists": True}}) == 0
    assert len(relay.published) == 0
    # 20 orders written once each, plus the rollup documents (a bucket, a status, the
    # customers) and the built marker: not 40 order writes.
    assert 20 < updated < 40, updated
    assert {p.order.id for p in placed} == {
        doc["_id"] async for doc in db[ORDERS].find({"outbox": []}, {"_id": 1})
    }


async def test_published_events_the_applier_does_not_take_are_removed_by_the_relay(
    db: AsyncDatabase[Document], publisher: RecordingPublisher
) -> None:
    relay = OutboxRelay(db, publisher, sweep_seconds=0.05, grace_seconds=0, settle_seconds=0.2)
    orders = order_service(db, relay)
    order = (await orders.place(place_order(), NO_DELIVERY)).order
    # No status change: no rollup delta, so no applier write of this order.
    await orders.act(
        UpdateMetadata(action="update_metadata", id=order.id, metadata={"gift": True}),
        NO_DELIVERY,
    )
    assert await db[ORDERS].count_documents(WITH_OUTBOX) == 1

    running = asyncio.create_task(relay.run())
    try:

        async def removed() -> bool:
            left = await db[ORDERS].count_documents(WITH_OUTBOX)
            return left == 0 and len(relay.published) == 0

        await eventually(removed, timeout=5.0)
    finally:
        running.cancel()
    # The sweep ran meanwhile (grace 0) and published nothing twice.
    assert [e.routing_key for e in publisher.published] == [
        "order.placed",
        "order.metadata_updated",
    ]


async def test_a_later_change_does_not_publish_the_events_already_published_again(
    db: AsyncDatabase[Document], publisher: RecordingPublisher
) -> None:
    relay = OutboxRelay(db, publisher, sweep_seconds=60, grace_seconds=60, settle_seconds=60)
    orders = order_service(db, relay)
    order = (await orders.place(place_order(), NO_DELIVERY)).order
    for status in ("processing", "confirmed"):
        await orders.act(
            UpdateStatus(action="update_status", id=order.id, status=status), NO_DELIVERY
        )
    stored = await db[ORDERS].find_one({"_id": order.id})
    assert stored is not None
    assert len(stored["outbox"]) == 3  # all three published, none removed yet
    assert await relay.sweep(older_than=timedelta(0)) == 0

    kinds = [e.routing_key for e in publisher.published]
    assert kinds == ["order.placed", "order.status_changed", "order.status_changed"]
    assert [json.loads(e.payload)["version"] for e in publisher.published[1:]] == [2, 3]

    await relay.drain()  # shutdown: removed, nothing published again
    assert await db[ORDERS].count_documents(WITH_OUTBOX) == 0
    assert len(publisher.published) == 3


def test_published_events_come_due_in_the_order_they_were_published() -> None:
    now = [0.0]
    published = PublishedEvents(clock=lambda: now[0])
    published.add(1, ["a"])
    now[0] = 1.0
    published.add(2, ["b"])
    published.add(1, ["c"])
    assert published.due(older_than=0.5) == {1: frozenset({"a", "c"})}
    published.forget({1: {"a", "c"}})
    assert published.due(older_than=0.5) == {}  # order 2 is 0 s old; order 1's 2nd mark: gone
    now[0] = 2.0
    assert published.due(older_than=0.5) == {2: frozenset({"b"})}
    assert len(published) == 1  # due does not forget: only a removal does


def test_an_event_no_applier_round_could_take_yet_waits_longer() -> None:
    now = [0.0]
    published = PublishedEvents(clock=lambda: now[0])
    published.add(1, ["a"])
    now[0] = 1.0
    # Old enough, but no round has begun since it was published: due at 1.5 s only.
    assert published.due(1.0, unless_new=1.5) == {}
    now[0] = 1.5
    assert published.due(1.0, unless_new=1.5) == {1: frozenset({"a"})}

    published.add(2, ["b"])
    now[0] = 2.0
    with published.round():  # begins after "b" was published
        now[0] = 2.6
    assert published.due(0.5, unless_new=1.5) == {2: frozenset({"b"})}

    published.add(3, ["c"])
    now[0] = 3.0
    with pytest.raises(RuntimeError), published.round():  # a round that failed took nothing
        raise RuntimeError
    now[0] = 3.7
    assert published.due(0.5, unless_new=1.5) == {}
    now[0] = 4.2
    assert published.due(0.5, unless_new=1.5) == {3: frozenset({"c"})}


async def test_the_relay_waits_a_little_for_a_running_applier_round(
    db: AsyncDatabase[Document], publisher: RecordingPublisher
) -> None:
    """Its write of the same orders would make the round's transaction start over; but it
    waits a quarter of the window at most, so an event still leaves within twice the
    window (inside the patience of another process's relay)."""
    relay = OutboxRelay(db, publisher, sweep_seconds=60, grace_seconds=60, settle_seconds=0.8)
    orders = order_service(db, relay)
    await orders.place(place_order(), NO_DELIVERY)
    await asyncio.sleep(1.25)  # due by age alone (1.5 x settle)
    with relay.published.round():
        settling = asyncio.create_task(relay.settle())
        await asyncio.sleep(0.05)
        assert not settling.done()
        assert await db[ORDERS].count_documents(WITH_OUTBOX) == 1
    assert await settling == 1
    assert await db[ORDERS].count_documents(WITH_OUTBOX) == 0

    await orders.place(place_order(), NO_DELIVERY)
    await asyncio.sleep(1.25)
    with relay.published.round():  # a round that outlasts the wait
        assert await asyncio.wait_for(relay.settle(), timeout=2.0) == 1
    assert await db[ORDERS].count_documents(WITH_OUTBOX) == 0
    assert len(relay.published) == 0


async def test_the_applier_leaves_orders_being_written_for_its_next_round(
    db: AsyncDatabase[Document],
    client: AsyncMongoClient[Document],
    settling: tuple[OutboxRelay, OrderService],
) -> None:
    relay, orders = settling
    first, second = [(await orders.place(place_order(), NO_DELIVERY)).order for _ in range(2)]
    applier = RollupApplier(client, db, currency="EUR", published=relay.published)
    with relay.writing([second.id]):  # its write and publishing are under way
        assert await applier.apply_once() == 1
    stored = {doc["_id"]: doc async for doc in db[ORDERS].find({})}
    assert (len(stored[first.id]["outbox"]), len(stored[second.id]["outbox"])) == (0, 1)
    assert len(stored[second.id]["rollups_pending"]) == 2

    assert await applier.apply_once() == 1  # the next round takes it, with its event
    assert len((await db[ORDERS].find_one({"_id": second.id}) or {})["outbox"]) == 0


async def _placed_then_changed_elsewhere(
    db: AsyncDatabase[Document], first: RecordingPublisher, second: RecordingPublisher
) -> tuple[OutboxRelay, OutboxRelay]:
    """An order placed through one relay (one writing process), then changed through
    another (a second worker, or the gateway), both with a 0.2 s window."""
    relays = [
        OutboxRelay(db, p, sweep_seconds=60, grace_seconds=60, settle_seconds=0.2)
        for p in (first, second)
    ]
    order = (await order_service(db, relays[0]).place(place_order(), NO_DELIVERY)).order
    await order_service(db, relays[1]).act(
        UpdateStatus(action="update_status", id=order.id, status="processing"), NO_DELIVERY
    )
    return relays[0], relays[1]


async def test_another_process_waits_for_published_events_to_leave_instead_of_repeating_them(
    db: AsyncDatabase[Document], publisher: RecordingPublisher
) -> None:
    first = publisher
    second = RecordingPublisher()
    placer, changer = await _placed_then_changed_elsewhere(db, first, second)
    assert [e.routing_key for e in first.published] == ["order.placed"]  # in its window
    assert second.published == []  # the change waits behind the placed event

    await placer.settle(older_than=0)  # the placing process removes its published event

    async def published() -> bool:
        return len(second.published) == 1

    await eventually(published, timeout=5.0)
    assert [e.routing_key for e in second.published] == ["order.status_changed"]
    assert await db[ORDERS].count_documents(WITH_OUTBOX) == 1  # in the changer's window
    await changer.drain()
    assert await db[ORDERS].count_documents(WITH_OUTBOX) == 0
    assert len(first.published) + len(second.published) == 2


async def test_an_entry_another_process_left_behind_is_published_first_after_the_patience(
    db: AsyncDatabase[Document], publisher: RecordingPublisher
) -> None:
    publisher.failing = True  # the placing process never publishes its event
    second = RecordingPublisher()
    _, changer = await _placed_then_changed_elsewhere(db, publisher, second)
    assert second.published == []

    async def published() -> bool:
        return len(second.published) == 2

    await eventually(published, timeout=5.0)  # after 2 x 0.2 + 0.5 s
    assert [e.routing_key for e in second.published] == ["order.placed", "order.status_changed"]
    await changer.drain()
    assert publisher.published == []


async def test_two_processes_changing_one_order_in_turn_publish_each_event_once_in_order(
    db: AsyncDatabase[Document], publisher: RecordingPublisher
) -> None:
    """Each waits for the other's entries ahead of its own, and leaves those after its own
    to the other; a chain of such waits outlasts the patience without repeating an event."""
    relays = [
        OutboxRelay(
            db,
            RecordingPublisher(publisher.published),
            sweep_seconds=60,
            grace_seconds=60,
            settle_seconds=0.2,
        )
        for _ in range(2)
    ]
    first, second = (order_service(db, relay) for relay in relays)
    running = [asyncio.create_task(relay.run()) for relay in relays]
    try:
        order = (await first.place(place_order(), NO_DELIVERY)).order
        turns = zip(
            itertools.cycle((second, first)),
            ("processing", "confirmed", "processing", "confirmed", "in_progress", "completed"),
        )
        for orders, status in turns:  # each waits for the other's event ahead of its own
            await orders.act(
                UpdateStatus(action="update_status", id=order.id, status=status), NO_DELIVERY
            )

        async def settled() -> bool:
            left = await db[ORDERS].count_documents(WITH_OUTBOX)
            return len(publisher.published) >= 7 and left == 0

        await eventually(settled, timeout=10.0)
    finally:
        for task in running:
            task.cancel()
    versions = [json.loads(e.payload).get("version") for e in publisher.published]
    assert versions == [None, 2, 3, 4, 5, 6, 7]
    assert len({e.event_id for e in publisher.published}) == 7


async def test_the_write_names_its_own_event_not_the_last_entry_of_the_outbox(
    db: AsyncDatabase[Document], publisher: RecordingPublisher
) -> None:
    """Another process may write the order between this write and its read-back: its event
    is then the outbox's last entry, and stays its own to publish."""
    now = datetime.now(UTC)
    entries = [
        {"event_id": name, "routing_key": "order.status_changed", "payload": "{}", "at": now}
        for name in ("mine", "theirs")
    ]
    await db[ORDERS].insert_one({"_id": 1, "outbox": entries})
    relay = OutboxRelay(db, publisher, sweep_seconds=60, grace_seconds=60, settle_seconds=0.2)

    assert await relay.flush(1, entries, written="mine") == 1
    await asyncio.sleep(0.3)  # a look again, were it waiting (every 0.05 s)
    assert [e.event_id for e in publisher.published] == ["mine"]
    await db[ORDERS].update_one({"_id": 1}, {"$pull": {"outbox": {"event_id": "theirs"}}})
    await relay.drain()  # their process published and removed theirs
    assert [e.event_id for e in publisher.published] == ["mine"]
    assert await db[ORDERS].count_documents(WITH_OUTBOX) == 0


async def test_the_sweeps_of_start_up_and_shutdown_leave_another_process_young_entries_alone(
    db: AsyncDatabase[Document], publisher: RecordingPublisher
) -> None:
    placer = OutboxRelay(db, publisher, sweep_seconds=60, grace_seconds=60, settle_seconds=0.2)
    await order_service(db, placer).place(place_order(), NO_DELIVERY)  # in its window
    other = RecordingPublisher()
    starting = OutboxRelay(db, other, sweep_seconds=60, grace_seconds=60, settle_seconds=0.2)
    running = asyncio.create_task(starting.run())  # its start-up sweep
    await asyncio.sleep(0.3)
    running.cancel()
    stopping = OutboxRelay(db, other, sweep_seconds=60, grace_seconds=60, settle_seconds=0.2)
    await stopping.drain()  # its shutdown sweep
    assert other.published == []

    await asyncio.sleep(1.0)  # past the patience (2 x 0.2 + 0.5 s): left behind
    await stopping.drain()
    assert [e.routing_key for e in other.published] == ["order.placed"]
