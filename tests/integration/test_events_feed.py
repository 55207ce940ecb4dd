"""The events feed against the real mongod: every write's event published once a reader has
read it, one order's in the order written; nothing lost while the broker is down; the backlog
the `orders_outbox_backlog` gauge shows; and the events an earlier version left in `outbox`
arrays, published at start-up through their index."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from orders_vocabulary.statuses import OrderStatus
from schemas.commands import UpdateStatus
from service.application.delivery import Delivery
from service.application.usecases import OrderService
from service.domain.records import PendingEvent
from service.store.client import ORDERS, Document
from service.store.feed import ChangeFeed
from service.store.outbox import (
    EVENTS_FEED,
    FEED_PIPELINE,
    LEFT_BEHIND,
    EventRelay,
    backlog,
    publish_left_behind,
)
from tests.e2e.waiting import eventually
from tests.integration.builders import place_order
from tests.integration.conftest import Events, RecordingPublisher

NO_DELIVERY = Delivery()


class SlowBroker(RecordingPublisher):
    """Confirms each event after a random delay of up to 2 ms, as a broker under load may:
    what is published at once may be confirmed in any order."""

    def __init__(self) -> None:
        super().__init__()
        self._random = random.Random(5)

    async def publish_event(self, event: PendingEvent) -> None:
        await asyncio.sleep(self._random.random() / 500)
        await super().publish_event(event)


def _stages(plan: Any) -> list[str]:
    """Every stage name in an explain plan, depth first."""
    if isinstance(plan, dict):
        names = [plan["stage"]] if "stage" in plan else []
        return names + [name for value in plan.values() for name in _stages(value)]
    if isinstance(plan, list):
        return [name for value in plan for name in _stages(value)]
    return []


async def test_the_backlog_counts_the_events_written_and_not_yet_published(
    orders: OrderService, db: AsyncDatabase[Document], events: Events
) -> None:
    assert await backlog(db) == 0
    placed = [(await orders.place(place_order(), NO_DELIVERY)).order for _ in range(3)]
    action = UpdateStatus(action="update_status", id=placed[0].id, status=OrderStatus.PROCESSING)
    await orders.act(action, NO_DELIVERY)
    assert await backlog(db) == 4
    assert len(await events.published()) == 4
    assert await backlog(db) == 0


async def test_a_running_reader_publishes_each_orders_events_in_order_and_loses_none_to_an_outage(
    orders: OrderService, db: AsyncDatabase[Document], events: Events
) -> None:
    publisher = SlowBroker()
    feed = ChangeFeed(
        db,
        EVENTS_FEED,
        EventRelay(publisher),
        owner="worker",
        pipeline=FEED_PIPELINE,
        lease_seconds=0.6,
        max_batch=3,
        transactional=False,
    )
    chain = ["processing", "confirmed", "in_progress", "on_hold", "cancelled"]

    async def walk(id: int) -> None:
        for status in chain:
            action = UpdateStatus(action="update_status", id=id, status=OrderStatus(status))
            await orders.act(action, NO_DELIVERY)

    reading = asyncio.create_task(feed.run())
    try:
        placed = [(await orders.place(place_order(), NO_DELIVERY)).order for _ in range(4)]
        await asyncio.gather(*(walk(order.id) for order in placed[:2]))
        publisher.failing = True  # the broker goes away
        await asyncio.gather(*(walk(order.id) for order in placed[2:]))
        await eventually(_refused(publisher), what="a batch refused")
        publisher.failing = False

        async def all_out() -> bool:
            return await backlog(db) == 0

        await eventually(all_out, timeout=30, what="every event published")
    finally:
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading
    bodies = [json.loads(event.payload) for event in publisher.published]
    for order in placed:
        versions = [body.get("version", 1) for body in bodies if _order_id(body) == order.id]
        unique = list(dict.fromkeys(versions))  # a batch the outage failed went out again
        assert unique == [1, 2, 3, 4, 5, 6], order.id
        assert _in_order(versions), versions


def _order_id(body: dict[str, Any]) -> int:
    return int(body["order"]["id"] if "order" in body else body["id"])


def _refused(publisher: RecordingPublisher) -> Callable[[], Awaitable[bool]]:
    async def refused() -> bool:
        return publisher.refused > 0

    return refused


def _in_order(versions: list[int]) -> bool:
    """Whether no version in `versions` went out before the one before it (a batch that
    failed goes out again: its versions repeat, in order)."""
    highest = 0
    for version in versions:
        if version > highest + 1:
            return False
        highest = max(highest, version)
    return True


async def test_events_an_earlier_version_left_in_outboxes_are_published_in_order_then_removed(
    db: AsyncDatabase[Document], publisher: RecordingPublisher
) -> None:
    now = datetime.now(UTC)

    def entry(n: int) -> Document:
        return {
            "event_id": f"e-{n}",
            "routing_key": "order.status_changed",
            "payload": json.dumps({"n": n}),
            "correlation_id": None,
            "at": now,
        }

    await db[ORDERS].insert_many(
        [
            {"_id": 1, "order_id": 1, "outbox": [entry(1), entry(2)]},
            {"_id": 2, "order_id": 2, "outbox": []},
            {"_id": 3, "order_id": 3, "outbox": [entry(3)]},
        ]
    )
    with_plan = await db.command({"explain": {"find": ORDERS, "filter": LEFT_BEHIND}})
    stages = _stages(with_plan)
    assert "IXSCAN" in stages, with_plan
    assert "COLLSCAN" not in stages, with_plan

    publisher.failing = True
    with contextlib.suppress(ConnectionError):
        await publish_left_behind(db, publisher)
    assert await db[ORDERS].count_documents(LEFT_BEHIND) == 2  # kept for the next start
    publisher.failing = False
    assert await publish_left_behind(db, publisher) == 3
    assert [event.event_id for event in publisher.published] == ["e-1", "e-2", "e-3"]
    assert await db[ORDERS].count_documents(LEFT_BEHIND) == 0
    assert await publish_left_behind(db, publisher) == 0
