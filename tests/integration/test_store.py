"""Placing, acting and idempotency against a real mongod: unique indexes, conditional writes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine, Sequence
from decimal import Decimal
from itertools import chain, repeat
from typing import Any, TypeVar

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from orders_vocabulary.statuses import OrderStatus
from schemas.commands import CancelOrder, CompleteOrder, OrderActionAdapter, UpdateStatus
from schemas.queries import GetOrder
from service.adapters.events import event_payload
from service.application.clock import utc_now
from service.application.commands import order_action
from service.application.delivery import Delivery
from service.application.idempotency import action_stamp
from service.application.usecases import OrderService
from service.domain.errors import InvalidTransition, OrderNotFound, VersionConflict
from service.domain.model import Order
from service.domain.order import decide
from service.store.client import Document
from service.store.orders import ChangeWrite, OrderStore
from service.store.queries import OrderQueries
from service.store.stats import OrderStats
from tests.integration.builders import CURSORS, place_order
from tests.integration.conftest import Events, RecordingPublisher

NO_DELIVERY = Delivery()
T = TypeVar("T")


async def test_place_stores_the_order_with_sequential_ids_and_publishes_its_event(
    orders: OrderService, db: AsyncDatabase[Document], events: Events
) -> None:
    first = (await orders.place(place_order(), Delivery(correlation_id="c-1"))).order
    second = (await orders.place(place_order(), NO_DELIVERY)).order

    assert (first.id, second.id) == (1, 2)
    assert first.order_id >= 100_000
    assert first.order_id != second.order_id
    stored = await db["orders"].find_one({"_id": first.id})
    assert stored is not None
    assert stored["total"] == Decimal("300.00")
    assert stored["status"] == "pending"
    assert stored["event"]["routing_key"] == "order.placed"  # written with the order
    published = await events.published()
    assert [e.routing_key for e in published] == ["order.placed", "order.placed"]
    assert published[0].correlation_id == "c-1"
    assert published[0].event_id == stored["event"]["event_id"]


async def test_same_idempotency_key_returns_the_first_order_and_creates_nothing(
    orders: OrderService, db: AsyncDatabase[Document]
) -> None:
    command = place_order(idempotency_key="form-42")
    results = await asyncio.gather(*(orders.place(command, NO_DELIVERY) for _ in range(10)))

    assert {placed.order.id for placed in results} == {results[0].order.id}
    assert sum(not placed.replayed for placed in results) == 1
    assert await db["orders"].count_documents({}) == 1


async def test_message_id_deduplicates_a_redelivered_place(
    orders: OrderService, db: AsyncDatabase[Document]
) -> None:
    delivery = Delivery(message_id="m-1")
    first = await orders.place(place_order(), delivery)
    again = await orders.place(place_order(), delivery)

    assert again.replayed
    assert again.order.id == first.order.id
    assert await db["orders"].count_documents({}) == 1


async def test_a_taken_order_number_is_drawn_again(db: AsyncDatabase[Document]) -> None:
    numbers = chain([555_555_555, 555_555_555], repeat(777_777_777))
    orders = OrderService(
        OrderStore(db), OrderQueries(db, cursors=CURSORS), OrderStats(db),
        default_currency="EUR", order_numbers=lambda: next(numbers),
    )  # fmt: skip
    first = (await orders.place(place_order(), NO_DELIVERY)).order
    second = (await orders.place(place_order(), NO_DELIVERY)).order

    assert (first.order_id, second.order_id) == (555_555_555, 777_777_777)


async def test_twenty_concurrent_actions_at_one_version_have_exactly_one_winner(
    orders: OrderService, events: Events
) -> None:
    order = (await orders.place(place_order(), NO_DELIVERY)).order
    targets = [OrderStatus.PROCESSING, OrderStatus.CONFIRMED, OrderStatus.ON_HOLD] * 7
    actions = [
        UpdateStatus(action="update_status", id=order.id, status=target, expected_version=1)
        for target in targets[:20]
    ]
    results = await asyncio.gather(
        *(orders.act(action, NO_DELIVERY) for action in actions), return_exceptions=True
    )

    winners = [r for r in results if not isinstance(r, BaseException)]
    conflicts = [r for r in results if isinstance(r, VersionConflict)]
    assert len(winners) == 1
    assert len(conflicts) == 19
    assert all(c.details["current_version"] == 2 for c in conflicts)
    final = await orders.get(GetOrder(id=order.id))
    assert final.version == 2
    assert len(final.status_history) == 2
    assert [e.routing_key for e in await events.published()].count("order.status_changed") == 1


async def test_concurrent_cancel_and_complete_never_both_succeed(orders: OrderService) -> None:
    order = (await orders.place(place_order(status="in_progress"), NO_DELIVERY)).order
    actions = [
        CancelOrder(action="cancel", id=order.id) if i % 2 else
        CompleteOrder(action="complete", id=order.id)
        for i in range(20)
    ]  # fmt: skip
    results = await asyncio.gather(
        *(orders.act(action, NO_DELIVERY) for action in actions), return_exceptions=True
    )

    final = await orders.get(GetOrder(id=order.id))
    assert final.version == 2
    assert final.status in {OrderStatus.CANCELLED, OrderStatus.COMPLETED}
    refused = [r for r in results if isinstance(r, InvalidTransition)]
    accepted = [r for r in results if not isinstance(r, BaseException)]
    assert len(refused) == 10
    assert len(accepted) == 10


async def test_a_repeated_request_id_is_applied_once(orders: OrderService, events: Events) -> None:
    order = (await orders.place(place_order(), NO_DELIVERY)).order
    action = OrderActionAdapter.validate_python(
        {"action": "update_status", "id": order.id, "status": "processing", "request_id": "r-1"}
    )
    await orders.act(action, NO_DELIVERY)
    await orders.act(action, NO_DELIVERY)
    back = OrderActionAdapter.validate_python(
        {"action": "update_status", "id": order.id, "status": "on_hold", "request_id": "r-2"}
    )
    await orders.act(back, NO_DELIVERY)
    again = await orders.act(action, NO_DELIVERY)  # r-1 again, after other changes

    assert again.status == OrderStatus.ON_HOLD
    assert again.version == 3
    assert [e.routing_key for e in await events.published()].count("order.status_changed") == 2


async def test_unknown_orders_are_not_found(orders: OrderService) -> None:
    with pytest.raises(OrderNotFound):
        await orders.act(CompleteOrder(action="complete", order_id=123_456_789), NO_DELIVERY)


async def test_events_wait_in_their_orders_while_the_broker_is_down(
    orders: OrderService,
    db: AsyncDatabase[Document],
    publisher: RecordingPublisher,
    events: Events,
) -> None:
    publisher.failing = True
    placed = await orders.place(place_order(), NO_DELIVERY)  # committed even so
    assert placed.order.id == 1
    with pytest.raises(ConnectionError):  # the batch fails: the checkpoint stays
        await events.published()
    assert publisher.published == []
    stored = await db["orders"].find_one({})
    assert stored is not None

    publisher.failing = False
    published = await events.published()
    assert [e.event_id for e in published] == [stored["event"]["event_id"]]
    assert await events.published() == published  # not again


async def test_events_of_one_order_are_published_in_version_order(
    orders: OrderService, events: Events
) -> None:
    order = (await orders.place(place_order(), NO_DELIVERY)).order
    chain_ = ["processing", "confirmed", "in_progress", "on_hold", "cancelled"]
    for status in chain_:
        action = UpdateStatus(action="update_status", id=order.id, status=OrderStatus(status))
        await orders.act(action, NO_DELIVERY)

    changes = [
        json.loads(e.payload) for e in await events.published() if e.routing_key != "order.placed"
    ]
    versions = [change["version"] for change in changes]
    assert versions == [2, 3, 4, 5, 6]


async def _update_count(db: AsyncDatabase[Document]) -> int:
    status = await db.client.admin.command("serverStatus")
    return int(status["metrics"]["commands"]["update"]["total"])


async def test_actions_that_arrive_together_share_one_write_and_each_applies_once(
    db: AsyncDatabase[Document], orders: OrderService, events: Events
) -> None:
    placed = await asyncio.gather(*(orders.place(place_order(), NO_DELIVERY) for _ in range(30)))
    before = await _update_count(db)
    changed = await asyncio.gather(
        *(
            orders.act(
                UpdateStatus(action="update_status", id=p.order.id, status="processing"),
                Delivery(message_id=f"act-{p.order.id}"),
            )
            for p in placed
        )
    )

    assert await _update_count(db) - before < len(placed)  # batched, not one each
    assert {(o.status, o.version) for o in changed} == {(OrderStatus.PROCESSING, 2)}
    stored = await db["orders"].find({"_id": {"$in": [p.order.id for p in placed]}}).to_list()
    assert {(d["status"], d["version"]) for d in stored} == {("processing", 2)}
    changes = [e for e in await events.published() if e.routing_key == "order.status_changed"]
    assert sorted(json.loads(e.payload)["id"] for e in changes) == sorted(
        p.order.id for p in placed
    )


async def test_in_one_write_batch_only_one_of_twenty_actions_at_one_version_wins(
    orders: OrderService, events: Events
) -> None:
    order = (await orders.place(place_order(), NO_DELIVERY)).order
    targets = [OrderStatus.PROCESSING, OrderStatus.CONFIRMED, OrderStatus.ON_HOLD] * 7
    results = await asyncio.gather(
        *(
            orders.act(
                UpdateStatus(action="update_status", id=order.id, status=t, expected_version=1),
                Delivery(message_id=f"racer-{n}"),
            )
            for n, t in enumerate(targets[:20])
        ),
        return_exceptions=True,
    )

    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1
    assert sum(isinstance(r, VersionConflict) for r in results) == 19
    final = await orders.get(GetOrder(id=order.id))
    assert (final.version, final.status) == (2, winners[0].status)
    assert [e.routing_key for e in await events.published()].count("order.status_changed") == 1


class GatedStore(OrderStore):
    """The store, with each batch of reads by id or of changes recorded (`started` set) and
    held until `gate` opens, so that arrivals meanwhile are seen by the batchers."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        super().__init__(db)
        self.started = asyncio.Event()
        self.gate = asyncio.Event()
        self.loads: list[list[int]] = []
        self.writes: list[list[int]] = []

    async def _by_ids(self, ids: Sequence[int]) -> list[Order | None]:
        self.loads.append(list(ids))
        self.started.set()
        await self.gate.wait()
        return await super()._by_ids(ids)

    async def _apply_batch(self, items: Sequence[ChangeWrite]) -> list[bool | BaseException]:
        self.writes.append([write.change.before.id for write in items])
        self.started.set()
        await self.gate.wait()
        return await super()._apply_batch(items)


async def _one_per_turn(calls: list[Coroutine[Any, Any, T]]) -> list[asyncio.Task[T]]:
    """Start each call in a loop turn of its own."""
    tasks = []
    for call in calls:
        tasks.append(asyncio.create_task(call))
        await asyncio.sleep(0)
    return tasks


async def test_loads_by_id_arriving_while_one_is_out_wait_for_it_and_share_the_next_find(
    db: AsyncDatabase[Document], orders: OrderService
) -> None:
    placed = [(await orders.place(place_order(), NO_DELIVERY)).order for _ in range(6)]
    store = GatedStore(db)
    first = asyncio.create_task(store.load(placed[0].id))
    await store.started.wait()
    rest = await _one_per_turn([store.load(order.id) for order in placed[1:]])
    store.gate.set()
    found = await asyncio.gather(first, *rest)

    assert [order.id for order in found if order is not None] == [o.id for o in placed]
    assert store.loads == [[placed[0].id], [order.id for order in placed[1:]]]


async def test_a_read_by_id_does_not_wait_for_the_loads_in_flight(
    db: AsyncDatabase[Document], orders: OrderService
) -> None:
    """A get reads alone: it is answered while the actions' batch of loads is held."""
    placed = [(await orders.place(place_order(), NO_DELIVERY)).order for _ in range(2)]
    store = GatedStore(db)
    held = asyncio.create_task(store.load(placed[0].id))
    await store.started.wait()

    found = await asyncio.wait_for(store.by_id(placed[1].id), timeout=5)

    assert found is not None
    assert found.id == placed[1].id
    assert not held.done()
    assert store.loads == [[placed[0].id]]
    store.gate.set()
    loaded = await held
    assert loaded is not None
    assert loaded.id == placed[0].id


async def test_changes_arriving_while_a_write_is_out_wait_for_it_and_share_the_next(
    db: AsyncDatabase[Document], orders: OrderService
) -> None:
    placed = [(await orders.place(place_order(), NO_DELIVERY)).order for _ in range(6)]
    store = GatedStore(db)

    def change(order: Order) -> Coroutine[Any, Any, bool]:
        action = UpdateStatus(action="update_status", id=order.id, status="processing")
        request = action_stamp(action, f"act-{order.id}")
        decided = decide(order, order_action(action), request, utc_now())
        assert decided is not None
        return store.apply(decided, None, event_payload(decided.event))

    first = asyncio.create_task(change(placed[0]))
    await store.started.wait()
    rest = await _one_per_turn([change(order) for order in placed[1:]])
    store.gate.set()
    written = await asyncio.gather(first, *rest)

    assert written == [True] * len(placed)
    assert store.writes == [[placed[0].id], [order.id for order in placed[1:]]]
