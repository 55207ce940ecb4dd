"""`orders_client.OrdersClient` against the real worker: typed models, typed errors,
many requests in flight on one connection, timeouts, typed events."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import aio_pika
import pytest
import pytest_asyncio

from orders_client import (
    IdempotencyConflict,
    InvalidTransition,
    OrderEvent,
    OrderNotFound,
    OrdersClient,
    RequestTimeout,
    UnknownAction,
    Unroutable,
    ValidationFailed,
    VersionConflict,
)
from schemas import (
    CancelOrder,
    CompleteOrder,
    ListOrders,
    OrderCommandRejected,
    OrderPlaced,
    OrderStatusChanged,
    PlaceOrder,
    UpdateMetadata,
    UpdateStatus,
)

from .amqp_client import COMMANDS_EXCHANGE, AmqpClient
from .contract import STATUSES, new_customer_id, simple_order
from .worker import Worker


@pytest_asyncio.fixture(loop_scope="session")
async def orders(worker: Worker, amqp_url: str) -> AsyncIterator[OrdersClient]:
    async with OrdersClient(amqp_url, timeout=10) as client:
        yield client


def new_order(customer_id: str, **extra: Any) -> PlaceOrder:
    return PlaceOrder.model_validate(simple_order(customer_id, **extra))


async def test_place_get_and_act(orders: OrdersClient) -> None:
    customer_id = new_customer_id()
    order = await orders.place(new_order(customer_id, price="12.50", quantity=2))
    assert order.customer_id == customer_id
    assert order.status == "pending"
    assert (order.version, order.total, order.currency) == (1, "25.00", "EUR")
    assert order.status_history[0].from_ is None

    assert await orders.get(order.id) == order
    assert await orders.get(order_id=order.order_id) == order

    started = await orders.act(
        UpdateStatus(id=order.id, action="update_status", status="in_progress", notes="go")
    )
    assert (started.status, started.version) == ("in_progress", 2)
    assert started.status_history[-1].notes == "go"
    tagged = await orders.act(
        UpdateMetadata(id=order.id, action="update_metadata", metadata={"crew": "B"})
    )
    assert tagged.metadata == {"crew": "B"}
    done = await orders.act(CompleteOrder(order_id=order.order_id, action="complete"))
    assert (done.status, done.version) == ("completed", 4)


async def test_idempotent_place_reports_the_first_order(orders: OrdersClient) -> None:
    command = new_order(new_customer_id(), idempotency_key=f"client-{uuid.uuid4().hex}")
    first = await orders.place_order(command)
    again = await orders.place_order(command)
    assert first.created
    assert not again.created
    assert again.order.id == first.order.id
    other_body = command.model_copy(update={"customer_id": new_customer_id()})
    with pytest.raises(IdempotencyConflict) as conflict:
        await orders.place_order(other_body)
    assert conflict.value.key == command.idempotency_key


async def test_error_replies_raise_typed_exceptions(orders: OrdersClient) -> None:
    with pytest.raises(OrderNotFound) as not_found:
        await orders.get(2**40)
    assert not_found.value.code == "not_found"
    assert not_found.value.message

    order = await orders.place(new_order(new_customer_id()))
    await orders.act(CancelOrder(id=order.id, action="cancel", reason="changed mind"))
    with pytest.raises(InvalidTransition) as invalid:
        await orders.act(CompleteOrder(id=order.id, action="complete"))
    assert (invalid.value.from_status, invalid.value.to_status) == ("cancelled", "completed")
    assert invalid.value.allowed == []

    other = await orders.place(new_order(new_customer_id()))
    with pytest.raises(VersionConflict) as conflict:
        await orders.act(
            UpdateStatus(
                id=other.id, action="update_status", status="confirmed", expected_version=7
            )
        )
    assert conflict.value.current_version == 1

    # The service's own validation (a body the models would refuse, sent raw).
    with pytest.raises(ValidationFailed) as invalid_body:
        await orders.request("orders.place", {"customer_id": "x", "items": []})
    assert isinstance(invalid_body.value.details, list)
    assert all("loc" in detail and "msg" in detail for detail in invalid_body.value.details)
    with pytest.raises(UnknownAction):
        await orders.request("orders.action", {"id": other.id, "action": "explode"})


async def test_list_and_iter_orders_walk_every_page(orders: OrdersClient) -> None:
    customer_id = new_customer_id()
    placed = await asyncio.gather(*(orders.place(new_order(customer_id)) for _ in range(7)))
    await orders.act(CancelOrder(id=placed[0].id, action="cancel"))

    page = await orders.list(customer_id=customer_id, per_page=3, page=3)
    assert (page.total, page.last_page, page.current_page) == (7, 3, 3)
    assert len(page.orders) == 1
    first = await orders.list(
        ListOrders(customer_id=customer_id, per_page=3, order_by="id", order_direction="asc")
    )
    assert [o.id for o in first.orders] == sorted(o.id for o in placed)[:3]

    walked = [o.id async for o in orders.iter_orders(customer_id=customer_id, per_page=2)]
    assert sorted(walked) == sorted(o.id for o in placed)
    active = [
        o
        async for o in orders.iter_orders(
            ListOrders(customer_id=customer_id, active_only=True), per_page=4
        )
    ]
    assert len(active) == 6
    assert all(o.status == "pending" for o in active)
    assert (await orders.list(customer_id=customer_id, status=["cancelled"])).total == 1


async def test_stats_and_statuses(orders: OrdersClient) -> None:
    customer_id = new_customer_id()
    await orders.place(new_order(customer_id, price="10.05"))
    second = await orders.place(new_order(customer_id, price="20.10"))
    await orders.act(UpdateStatus(id=second.id, action="update_status", status="on_hold"))

    stats = await orders.stats(customer_id=customer_id)
    assert stats.total_orders == 2
    assert stats.total_revenue == Decimal("30.15")
    assert stats.on_hold_orders == 1
    assert stats.status_breakdown["pending"] == 1
    assert [c.customer_id for c in stats.top_customers] == [customer_id]
    assert sum(day.orders for day in stats.revenue_by_day) == 2

    assert [status.value for status in await orders.statuses()] == STATUSES


async def test_many_places_in_flight_on_one_client(orders: OrdersClient) -> None:
    customers = [new_customer_id() for _ in range(25)]
    placed = await asyncio.gather(*(orders.place(new_order(c)) for c in customers))
    assert [order.customer_id for order in placed] == customers
    assert len({order.id for order in placed}) == 25


async def test_requests_in_flight_at_once_get_their_own_replies(
    orders: OrdersClient, amqp_client: AmqpClient
) -> None:
    """25 requests wait at once on a queue nobody serves; a stand-in answers them all, in
    reverse order, only after the last one arrived: each call gets its own answer."""
    routing_key = f"test.silent.{uuid.uuid4().hex}"
    channel = await amqp_client.connection.channel()
    try:
        queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
        await queue.bind(COMMANDS_EXCHANGE, routing_key=routing_key)
        calls = [
            asyncio.create_task(orders.request(routing_key, {"n": n}, timeout=20))
            for n in range(25)
        ]
        received: list[aio_pika.abc.AbstractIncomingMessage] = []
        async with asyncio.timeout(15), queue.iterator() as messages:
            async for message in messages:
                received.append(message)
                if len(received) == 25:
                    break
        assert not any(call.done() for call in calls)
        for message in reversed(received):
            n = json.loads(message.body)["n"]
            assert message.reply_to
            await channel.default_exchange.publish(
                aio_pika.Message(
                    json.dumps({"success": True, "data": n * 10}).encode(),
                    correlation_id=message.correlation_id,
                    content_type="application/json",
                ),
                routing_key=message.reply_to,
            )
            await message.ack()
        replies = await asyncio.gather(*calls)
    finally:
        await channel.close()
    assert [reply["data"] for reply in replies] == [n * 10 for n in range(25)]


async def test_timeout_when_nothing_answers(orders: OrdersClient, amqp_client: AmqpClient) -> None:
    routing_key = f"test.silent.{uuid.uuid4().hex}"
    channel = await amqp_client.connection.channel()
    try:
        queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
        await queue.bind(COMMANDS_EXCHANGE, routing_key=routing_key)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(RequestTimeout) as timeout:
            await orders.request(routing_key, {}, timeout=0.5)
        assert 0.5 <= loop.time() - started < 3
        assert timeout.value.code == "timeout"
        assert isinstance(timeout.value, TimeoutError)
    finally:
        await channel.close()
    # The client is still usable afterwards.
    assert len(await orders.statuses(timeout=5)) == 8


async def test_unroutable_request_fails_at_once(orders: OrdersClient) -> None:
    with pytest.raises(Unroutable):
        await orders.request(f"test.nobody.{uuid.uuid4().hex}", {}, timeout=5)
    assert len(await orders.statuses()) == 8


async def test_events_yield_typed_events(orders: OrdersClient, amqp_client: AmqpClient) -> None:
    customer_id = new_customer_id()
    async with orders.events() as events, orders.events("order.status_changed") as changes:
        order = await orders.place(new_order(customer_id))
        await orders.act(UpdateStatus(id=order.id, action="update_status", status="confirmed"))
        await amqp_client.publish("orders.place", {"customer_id": customer_id})  # no reply_to

        mine: dict[str, OrderEvent] = {}
        async with asyncio.timeout(10):
            async for event in events:
                if isinstance(event, OrderCommandRejected):
                    if event.payload == {"customer_id": customer_id}:
                        mine[event.event_type] = event
                elif isinstance(event, OrderPlaced):
                    if event.order.id == order.id:
                        mine[event.event_type] = event
                elif event.id == order.id:
                    mine[event.event_type] = event
                if len(mine) == 3:
                    break
        placed = mine["order.placed"]
        assert isinstance(placed, OrderPlaced)
        assert placed.order.customer_id == customer_id
        changed = mine["order.status_changed"]
        assert isinstance(changed, OrderStatusChanged)
        assert (changed.from_status, changed.to_status, changed.version) == (
            "pending",
            "confirmed",
            2,
        )
        rejected = mine["order.command_rejected"]
        assert isinstance(rejected, OrderCommandRejected)
        assert rejected.error.code == "validation_error"

        change = await changes.next(timeout=10)
        while not (isinstance(change, OrderStatusChanged) and change.id == order.id):
            change = await changes.next(timeout=10)
        assert change.to_status == "confirmed"
