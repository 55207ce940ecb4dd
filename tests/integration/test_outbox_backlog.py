"""The outbox backlog that the relay reports to the `orders_outbox_backlog` gauge."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from service.application.delivery import Delivery
from service.application.usecases import OrderService
from service.store.client import Document
from service.store.outbox import BACKLOG_PIPELINE, OutboxRelay
from tests.integration.builders import place_order
from tests.integration.conftest import RecordingPublisher


def _stages(plan: Any) -> list[str]:
    """Every stage name in an explain plan, depth first."""
    if isinstance(plan, dict):
        names = [plan["stage"]] if "stage" in plan else []
        return names + [name for value in plan.values() for name in _stages(value)]
    if isinstance(plan, list):
        return [name for value in plan for name in _stages(value)]
    return []


async def _place_unpublished(orders: OrderService, publisher: RecordingPublisher, n: int) -> None:
    """Orders committed while the broker is down: their events wait in the outbox."""
    publisher.failing = True
    for _ in range(n):
        await orders.place(place_order(), Delivery())
    publisher.failing = False


async def test_backlog_counts_pending_events_through_the_outbox_index(
    orders: OrderService,
    db: AsyncDatabase[Document],
    relay: OutboxRelay,
    publisher: RecordingPublisher,
) -> None:
    assert await relay.backlog() == 0
    await _place_unpublished(orders, publisher, 3)
    assert await relay.backlog() == 3

    with_plan = await db.command(
        "explain",
        {"aggregate": "orders", "pipeline": BACKLOG_PIPELINE, "cursor": {}},
    )
    stages = _stages(with_plan)
    assert "IXSCAN" in stages, with_plan
    assert "COLLSCAN" not in stages, with_plan

    await relay.sweep()
    assert await relay.backlog() == 0


async def test_the_relay_reports_the_backlog_after_each_sweep(
    orders: OrderService, db: AsyncDatabase[Document], publisher: RecordingPublisher
) -> None:
    reported: asyncio.Queue[int] = asyncio.Queue()
    relay = OutboxRelay(
        db, publisher, sweep_seconds=0.05, grace_seconds=3600, report_backlog=reported.put_nowait
    )

    async def next_report(expected: int) -> None:
        while await reported.get() != expected:
            pass

    task = asyncio.create_task(relay.run())
    try:
        await asyncio.wait_for(next_report(0), 10)
        await _place_unpublished(orders, publisher, 2)
        await asyncio.wait_for(next_report(2), 10)  # younger than the grace: left for later
        await relay.sweep(older_than=timedelta(0))
        await asyncio.wait_for(next_report(0), 10)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
