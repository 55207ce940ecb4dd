"""Idempotency against a real mongod: a key is tied to its request's body, caller keys and
message ids are separate namespaces, keys stored by earlier versions still work, and a
reply's order is always one that was stored."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import count
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from schemas.commands import OrderAction, OrderActionAdapter
from schemas.queries import GetOrder
from service.adapters.views import order_view
from service.application.delivery import Delivery
from service.application.placing import Placed
from service.application.usecases import OrderService
from service.domain.errors import IdempotencyConflict
from service.domain.order import Order
from service.store.client import Document
from service.store.orders import OrderStore
from service.store.queries import OrderQueries
from service.store.stats import OrderStats
from tests.integration.builders import CURSORS, place_order
from tests.integration.conftest import Events

NO_DELIVERY = Delivery()


def _action(order: Order, **body: Any) -> OrderAction:
    return OrderActionAdapter.validate_python({"id": order.id, **body})


async def _routing_keys(events: Events) -> list[str]:
    return [event.routing_key for event in await events.published()]


async def _count(db: AsyncDatabase[Document]) -> int:
    return await db["orders"].count_documents({})


async def _update_count(db: AsyncDatabase[Document]) -> int:
    status = await db.client.admin.command("serverStatus")
    return int(status["metrics"]["commands"]["update"]["total"])


async def _stored(orders: OrderService, order: Order) -> dict[str, Any]:
    return order_view(await orders.get(GetOrder(id=order.id)))


# -- place ---------------------------------------------------------------------------------


async def test_the_same_key_and_body_replays_and_another_body_is_a_conflict(
    orders: OrderService, db: AsyncDatabase[Document], events: Events
) -> None:
    first = await orders.place(place_order("CUST-1", idempotency_key="form-1"), NO_DELIVERY)
    # The same parsed command, spelt otherwise: the price as an integer, the default status.
    same = place_order("CUST-1", idempotency_key="form-1", status="pending")
    again = await orders.place(same, Delivery(message_id="another-message"))

    assert again.replayed
    assert order_view(again.order) == order_view(first.order)
    with pytest.raises(IdempotencyConflict) as conflict:
        await orders.place(place_order("CUST-2", idempotency_key="form-1"), NO_DELIVERY)
    assert conflict.value.details == {"key": "form-1"}
    with pytest.raises(IdempotencyConflict):
        await orders.place(
            place_order("CUST-1", idempotency_key="form-1", total=Decimal("1.00")), NO_DELIVERY
        )
    assert await _count(db) == 1
    assert (await _routing_keys(events)) == ["order.placed"]


async def test_in_one_batch_the_first_of_a_key_places_and_a_different_body_conflicts(
    orders: OrderService, db: AsyncDatabase[Document]
) -> None:
    bodies = ["CUST-A", "CUST-A", "CUST-B", "CUST-A", "CUST-B"]
    results = await asyncio.gather(
        *(orders.place(place_order(c, idempotency_key="batch-1"), NO_DELIVERY) for c in bodies),
        return_exceptions=True,
    )

    placed = [r for r in results if isinstance(r, Placed)]
    assert [isinstance(r, IdempotencyConflict) for r in results] == [
        False, False, True, False, True
    ]  # fmt: skip
    assert [p.replayed for p in placed] == [False, True, True]
    assert {p.order.id for p in placed} == {placed[0].order.id}
    assert placed[0].order.customer_id == "CUST-A"
    assert await _count(db) == 1


async def test_a_redelivered_message_replays_and_a_reused_message_id_conflicts(
    orders: OrderService, db: AsyncDatabase[Document]
) -> None:
    delivery = Delivery(message_id="m-1")
    first = await orders.place(place_order("CUST-1"), delivery)

    again = await orders.place(place_order("CUST-1"), delivery)
    assert again.replayed
    assert again.order.id == first.order.id
    with pytest.raises(IdempotencyConflict) as conflict:
        await orders.place(place_order("CUST-OTHER"), delivery)
    assert conflict.value.details == {"key": "m-1"}
    assert await _count(db) == 1


async def test_a_caller_key_never_collides_with_a_message_id(
    orders: OrderService, db: AsyncDatabase[Document]
) -> None:
    by_message = await orders.place(place_order("CUST-M"), Delivery(message_id="X"))
    by_key = await orders.place(
        place_order("CUST-K", idempotency_key="amqp-message-id:X"), NO_DELIVERY
    )
    plain_key = await orders.place(place_order("CUST-P", idempotency_key="X"), NO_DELIVERY)
    # Each of them again finds its own order, whatever the others are called.
    again_by_key = await orders.place(
        place_order("CUST-K", idempotency_key="amqp-message-id:X"), Delivery(message_id="X")
    )
    again_by_message = await orders.place(place_order("CUST-M"), Delivery(message_id="X"))

    assert not by_key.replayed
    assert not plain_key.replayed
    assert len({by_message.order.id, by_key.order.id, plain_key.order.id}) == 3
    assert again_by_key.order.id == by_key.order.id
    assert again_by_message.order.id == by_message.order.id
    assert await _count(db) == 3


async def test_two_processes_placing_one_key_with_different_bodies_create_one_order(
    db: AsyncDatabase[Document],
) -> None:
    first, second = (
        OrderService(
            OrderStore(db),
            OrderQueries(db, cursors=CURSORS),
            OrderStats(db),
            default_currency="EUR",
        )
        for _ in range(2)
    )
    results = await asyncio.gather(
        first.place(place_order("CUST-A", idempotency_key="shared"), NO_DELIVERY),
        second.place(place_order("CUST-B", idempotency_key="shared"), NO_DELIVERY),
        return_exceptions=True,
    )

    assert sorted(type(r).__name__ for r in results) == ["IdempotencyConflict", "Placed"]
    assert await _count(db) == 1


# -- orders stored by earlier versions: keys without fingerprint, one namespace -------------


async def _store_as_an_earlier_version(
    orders: OrderService, db: AsyncDatabase[Document], customer_id: str, key: str
) -> Order:
    """An order as earlier versions stored it: one `idempotency_key` string (a message id
    as `amqp-message-id:<id>`), no fingerprint."""
    order = (await orders.place(place_order(customer_id), NO_DELIVERY)).order
    await db["orders"].update_one({"_id": order.id}, {"$set": {"idempotency_key": key}})
    return order


async def test_a_key_stored_without_fingerprint_replays_as_before(
    orders: OrderService, db: AsyncDatabase[Document]
) -> None:
    old = await _store_as_an_earlier_version(orders, db, "CUST-OLD", "form-old")

    again = await orders.place(place_order("CUST-NEW", idempotency_key="form-old"), NO_DELIVERY)

    assert again.replayed
    assert again.order.id == old.id
    assert await _count(db) == 1


async def test_an_old_message_id_key_is_a_message_id_and_no_caller_key(
    orders: OrderService, db: AsyncDatabase[Document]
) -> None:
    old = await _store_as_an_earlier_version(orders, db, "CUST-OLD", "amqp-message-id:m-old")

    redelivered = await orders.place(place_order("CUST-OLD"), Delivery(message_id="m-old"))
    assert redelivered.replayed
    assert redelivered.order.id == old.id
    # A caller sending that string gets neither the old order nor a new one.
    with pytest.raises(IdempotencyConflict) as conflict:
        await orders.place(
            place_order("CUST-OTHER", idempotency_key="amqp-message-id:m-old"), NO_DELIVERY
        )
    assert conflict.value.details == {"key": "amqp-message-id:m-old"}
    assert await _count(db) == 1


async def test_requests_applied_by_an_earlier_version_replay_in_their_namespace(
    orders: OrderService, db: AsyncDatabase[Document], events: Events
) -> None:
    order = (await orders.place(place_order(), NO_DELIVERY)).order
    await db["orders"].update_one(
        {"_id": order.id},
        {"$set": {"applied_requests": ["r-old", "amqp-message-id:m-old"], "version": 3}},
    )

    by_request = await orders.act(_action(order, action="cancel", request_id="r-old"), NO_DELIVERY)
    by_message = await orders.act(_action(order, action="complete"), Delivery(message_id="m-old"))
    assert (by_request.version, by_request.status) == (3, "pending")
    assert (by_message.version, by_message.status) == (3, "pending")
    # The old message id's text as a request_id is another request: it applies.
    moved = await orders.act(
        _action(order, action="update_status", status="processing",
                request_id="amqp-message-id:m-old"),
        NO_DELIVERY,
    )  # fmt: skip
    assert (moved.version, moved.status) == (4, "processing")
    assert (await _routing_keys(events)).count("order.status_changed") == 1


# -- actions -------------------------------------------------------------------------------


async def test_a_repeated_request_id_replays_and_another_action_with_it_conflicts(
    orders: OrderService, db: AsyncDatabase[Document], events: Events
) -> None:
    order = (await orders.place(place_order(), NO_DELIVERY)).order
    confirm = _action(order, action="update_status", status="confirmed", request_id="r-1")
    first = await orders.act(confirm, Delivery(message_id="a"))
    await orders.act(_action(order, action="update_status", status="on_hold"), NO_DELIVERY)

    again = await orders.act(confirm, Delivery(message_id="b"))
    assert (again.status, again.version) == ("on_hold", 3)  # not applied again
    with pytest.raises(IdempotencyConflict) as conflict:
        await orders.act(_action(order, action="cancel", request_id="r-1"), NO_DELIVERY)
    assert conflict.value.details == {"key": "r-1"}

    stored = await orders.get(GetOrder(id=order.id))
    assert (stored.status, stored.version) == ("on_hold", 3)
    assert first.version == 2
    assert (await _routing_keys(events)).count("order.status_changed") == 2


async def test_a_reused_message_id_on_an_action_conflicts_and_a_redelivery_replays(
    orders: OrderService,
) -> None:
    order = (await orders.place(place_order(), NO_DELIVERY)).order
    delivery = Delivery(message_id="act-1")
    await orders.act(_action(order, action="update_metadata", metadata={"a": 1}), delivery)

    again = await orders.act(_action(order, action="update_metadata", metadata={"a": 1}), delivery)
    assert again.version == 2
    with pytest.raises(IdempotencyConflict) as conflict:
        await orders.act(_action(order, action="update_metadata", metadata={"a": 2}), delivery)
    assert conflict.value.details == {"key": "act-1"}
    # A request_id with the message id's text is a request of its own.
    own = await orders.act(
        _action(order, action="update_metadata", metadata={"a": 3}, request_id="act-1"), delivery
    )
    assert (own.version, own.metadata) == (3, {"a": 3})


# -- one request twice in one batch of conditional writes -----------------------------------


def _ticking_clock() -> Callable[[], datetime]:
    """A clock a millisecond later at every reading, so no two decisions look alike."""
    ticks = count()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return lambda: start + timedelta(milliseconds=next(ticks))


async def test_the_same_request_twice_in_one_write_batch_replies_the_stored_order_twice(
    db: AsyncDatabase[Document], events: Events
) -> None:
    orders = OrderService(
        OrderStore(db), OrderQueries(db, cursors=CURSORS), OrderStats(db),
        default_currency="EUR", clock=_ticking_clock(),
    )  # fmt: skip
    order = (await orders.place(place_order(), NO_DELIVERY)).order
    cancel = _action(order, action="cancel", reason="asked twice", request_id="r-twice")
    before = await _update_count(db)

    # Both decide on the order this service placed, and their writes go in one bulk_write.
    replies = await asyncio.gather(
        orders.act(cancel, Delivery(message_id="first")),
        orders.act(cancel, Delivery(message_id="second")),
    )

    assert await _update_count(db) == before + 1  # one shared write, none alone
    stored = await _stored(orders, order)
    assert [order_view(reply) for reply in replies] == [stored, stored]
    assert (stored["status"], stored["version"], len(stored["status_history"])) == (
        "cancelled", 2, 2
    )  # fmt: skip
    changes = [e for e in await events.published() if e.routing_key == "order.status_changed"]
    assert [json.loads(e.payload)["version"] for e in changes] == [2]
    # What the service remembers is the stored order too: the next action starts from it.
    later = await orders.act(
        _action(order, action="update_metadata", metadata={"n": 1}), NO_DELIVERY
    )
    assert later.version == 3
    assert later.status_history[:2] == (await orders.get(GetOrder(id=order.id))).status_history[:2]


async def test_one_key_with_two_bodies_in_one_write_batch_is_one_change_and_a_conflict(
    orders: OrderService, db: AsyncDatabase[Document], events: Events
) -> None:
    order = (await orders.place(place_order(), NO_DELIVERY)).order
    before = await _update_count(db)

    results = await asyncio.gather(
        orders.act(_action(order, action="cancel", request_id="r-2"), NO_DELIVERY),
        orders.act(
            _action(order, action="update_status", status="on_hold", request_id="r-2"),
            NO_DELIVERY,
        ),
        return_exceptions=True,
    )

    assert await _update_count(db) == before + 1  # one shared write
    winner, loser = results
    assert isinstance(winner, Order)
    assert isinstance(loser, IdempotencyConflict)
    assert order_view(winner) == await _stored(orders, order)
    assert (winner.status, winner.version) == ("cancelled", 2)
    assert (await _routing_keys(events)).count("order.status_changed") == 1
