"""The event history against the real worker: what a live tap saw is in the stream, read back
by timestamp, by offset and from the first event, in version order per order; a reader that
starts mid-flow loses nothing; the CLI replays the history and keeps following.

The session's vhost is shared by every module (each with a database of its own, whose order
ids start at 1 again): the stream holds their events too, so each test keeps to a customer of
its own, or to its own event ids.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest_asyncio

from orders_client import OrderEvent, OrdersClient
from schemas import (
    CancelOrder,
    OrderMetadataUpdated,
    OrderPlaced,
    OrderStatusChanged,
    PlaceOrder,
    UpdateMetadata,
    UpdateStatus,
)

from .amqp_client import Event, EventCollector
from .contract import new_customer_id, simple_order
from .worker import Worker

ORDERS = Path(sys.executable).parent / "orders"
TIMEOUT = 30.0


@pytest_asyncio.fixture(loop_scope="session")
async def orders(worker: Worker, amqp_url: str) -> AsyncIterator[OrdersClient]:
    async with OrdersClient(amqp_url, timeout=10) as client:
        yield client


async def place_and_act(orders: OrdersClient, customer_id: str, count: int) -> list[int]:
    """`count` orders of `customer_id`, each confirmed and tagged; every other one cancelled:
    4 or 3 events each."""
    ids = []
    for number in range(count):
        order = await orders.place(PlaceOrder.model_validate(simple_order(customer_id)))
        await orders.act(UpdateStatus(id=order.id, action="update_status", status="confirmed"))
        await orders.act(
            UpdateMetadata(id=order.id, action="update_metadata", metadata={"n": number})
        )
        if number % 2 == 0:
            await orders.act(CancelOrder(id=order.id, action="cancel"))
        ids.append(order.id)
    return ids


def events_of(count: int) -> int:
    return sum(4 if number % 2 == 0 else 3 for number in range(count))


async def read_all(orders: OrdersClient, **options: Any) -> list[tuple[int | None, OrderEvent]]:
    """The history up to its end as it is now: (offset, event)."""
    read = []
    async with asyncio.timeout(TIMEOUT), orders.events(follow=False, **options) as events:
        async for event in events:
            read.append((events.position, event))  # noqa: PERF401 - position moves
    return read


def tapped(tap: list[Event], ids: list[int]) -> list[str]:
    return [e.body["event_id"] for e in tap if e.order_db_id in ids]


def assert_version_order(events: list[OrderEvent]) -> None:
    versions: dict[int, list[int]] = defaultdict(list)
    for event in events:
        if isinstance(event, OrderPlaced):
            versions[event.order.id].append(event.order.version)
        elif isinstance(event, OrderStatusChanged | OrderMetadataUpdated):
            versions[event.id].append(event.version)
    for order_versions in versions.values():
        assert order_versions == list(range(1, len(order_versions) + 1)), versions


async def test_the_history_holds_what_a_live_tap_saw_by_timestamp_offset_and_from_first(
    orders: OrdersClient, events: EventCollector
) -> None:
    customer_id = new_customer_id()
    before = datetime.now(UTC) - timedelta(seconds=1)
    ids = await place_and_act(orders, customer_id, 3)
    live = await events.wait_for_all(lambda e: e.order_db_id in ids, events_of(3))
    expected = tapped(live, ids)

    by_time = await read_all(orders, since=before, customer_id=customer_id)
    assert [event.event_id for _, event in by_time] == expected
    assert_version_order([event for _, event in by_time])
    offsets = [offset for offset, _ in by_time if offset is not None]
    assert len(offsets) == len(by_time)
    assert offsets == sorted(offsets)

    first_offset = offsets[0]
    by_offset = await read_all(orders, since=first_offset, customer_id=customer_id)
    assert by_offset == by_time
    from_first = await read_all(orders, since="first", customer_id=customer_id)
    assert from_first == by_time
    # One order, by its ids: its events alone, the metadata update included.
    order = await orders.get(ids[1])
    one = await read_all(orders, since=first_offset, id=order.id, order_id=order.order_id)
    assert [event.event_type for _, event in one] == [
        "order.placed",
        "order.status_changed",
        "order.metadata_updated",
    ]
    changes = await read_all(
        orders, pattern="order.status_changed", since=first_offset, customer_id=customer_id
    )
    assert len(changes) == 3 + 2


async def test_a_reader_that_starts_mid_flow_loses_nothing_at_the_seam(
    orders: OrdersClient, events: EventCollector
) -> None:
    customer_id = new_customer_id()
    start = datetime.now(UTC) - timedelta(seconds=1)
    producer = asyncio.create_task(place_and_act(orders, customer_id, 12))
    try:
        await events.wait_for_all(
            lambda e: e.body.get("order", {}).get("customer_id") == customer_id, 3
        )
        assert not producer.done()  # the reader starts while events keep coming
        read: list[OrderEvent] = []
        async with orders.events(since=start, customer_id=customer_id) as history:
            ids = await producer
            async with asyncio.timeout(TIMEOUT):
                async for event in history:
                    read.append(event)
                    if len(read) == events_of(12):
                        break
            assert history.caught_up
            # Nothing more: no repeat of an event already read arrives after them.
            await asyncio.sleep(0)
        live = await events.wait_for_all(lambda e: e.order_db_id in ids, events_of(12))
        assert [event.event_id for event in read] == tapped(live, ids)
        assert_version_order(read)
    finally:
        if not producer.done():
            producer.cancel()


async def _orders_cli(amqp_url: str, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        str(ORDERS),
        *args,
        env={**os.environ, "ORDERS_AMQP_URL": amqp_url, "COLUMNS": "250", "NO_COLOR": "1"},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_watch_since_first_replays_the_history_and_keeps_following(
    orders: OrdersClient, amqp_url: str
) -> None:
    customer_id = new_customer_id()
    (earlier_id,) = await place_and_act(orders, customer_id, 1)
    earlier = await orders.get(earlier_id)
    watch = await _orders_cli(amqp_url, "watch", "--since", "first", "--json")
    try:
        mine: list[dict[str, Any]] = []
        numbers = {earlier.order_id}

        async def read_mine(count: int) -> None:
            assert watch.stdout is not None
            while len(mine) < count:
                event = json.loads(await watch.stdout.readline())
                if (event.get("order") or event).get("order_id") in numbers:
                    mine.append(event)

        async with asyncio.timeout(TIMEOUT):
            await read_mine(4)  # placed, confirmed, tagged, cancelled: from the history
            later = await orders.place(PlaceOrder.model_validate(simple_order(customer_id)))
            numbers.add(later.order_id)
            await read_mine(5)  # and a live one
        assert [e["event_type"] for e in mine] == [
            "order.placed",
            "order.status_changed",
            "order.metadata_updated",
            "order.status_changed",
            "order.placed",
        ]
        assert mine[0]["order"]["id"] == earlier.id
        assert mine[4]["order"]["id"] == later.id
        watch.send_signal(signal.SIGINT)
        _, stderr = await asyncio.wait_for(watch.communicate(), TIMEOUT)
        assert watch.returncode == 0
        assert "history replayed; following live events" in stderr.decode()
    finally:
        if watch.returncode is None:
            watch.kill()
            await watch.wait()


async def test_history_prints_an_orders_events_beside_its_status_history(
    orders: OrdersClient, amqp_url: str
) -> None:
    customer_id = new_customer_id()
    (order_id,) = await place_and_act(orders, customer_id, 1)
    order = await orders.get(order_id)
    await read_all(orders, since="first", id=order.id, order_id=order.order_id)  # all published
    process = await _orders_cli(amqp_url, "history", str(order.order_id), "--order-id", "--json")
    stdout, stderr = await asyncio.wait_for(process.communicate(), TIMEOUT)
    assert process.returncode == 0, stderr.decode()
    shown = json.loads(stdout)
    assert shown["order"]["id"] == order.id
    assert [entry["event"]["event_type"] for entry in shown["events"]] == [
        "order.placed",
        "order.status_changed",
        "order.metadata_updated",
        "order.status_changed",
    ]
    offsets = [entry["offset"] for entry in shown["events"]]
    assert offsets == sorted(offsets)
    assert len(shown["order"]["status_history"]) == 3

    process = await _orders_cli(amqp_url, "history", str(order.order_id), "--order-id")
    stdout, _ = await asyncio.wait_for(process.communicate(), TIMEOUT)
    assert process.returncode == 0
    table = stdout.decode()
    assert f"events of order {order.order_id} (id {order.id}) in the history" in table
    assert "its status_history" in table
    assert "pending -> confirmed (update_status)" in table
