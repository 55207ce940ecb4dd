"""The stats rollups are exact: rollups plus pending deltas equal the pipeline over the orders
(and list totals by status equal a count of the orders), before, during and after the applier
runs, and when built from orders loaded directly."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from schemas.commands import UpdateStatus
from schemas.queries import ListOrders, OrderStatsQuery
from service.domain.statuses import TRANSITIONS, OrderStatus
from service.placing import Delivery
from service.store.client import ORDERS, Document
from service.store.orders import OrderStore
from service.store.outbox import OutboxRelay
from service.store.queries import OrderQueries, order_filter
from service.store.rollups import (
    ORDER_COUNTS,
    ROLLUP_STATE,
    STATUS_COUNTS,
    RollupApplier,
    ensure_rollup_indexes,
    ensure_rollups,
    global_stats,
)
from service.store.stats import OrderStats
from service.usecases import OrderService
from tests.integration.builders import CURSORS, place_order

CUSTOMERS = [f"cust-{n}" for n in range(7)]


def _clock(seed: int) -> Iterator[datetime]:
    rng = random.Random(seed)
    start = datetime(2025, 10, 1, tzinfo=UTC)
    while True:
        yield start + timedelta(days=rng.randrange(5), minutes=rng.randrange(600))


async def _workload(
    db: AsyncDatabase[Document], relay: OutboxRelay, client: AsyncMongoClient[Document]
) -> None:
    rng = random.Random(7)
    times = _clock(7)
    orders = OrderService(
        OrderStore(db), OrderQueries(db, cursors=CURSORS), OrderStats(db, client), relay,
        default_currency="EUR", clock=lambda: next(times),
    )  # fmt: skip
    placed = []
    for _ in range(60):
        total = Decimal(rng.randrange(100, 50_000)) / 100
        command = place_order(
            rng.choice(CUSTOMERS),
            items=[{"product_id": 1, "product_name": "Thing", "quantity": 1, "price": total}],
            status=rng.choice(list(OrderStatus)),
            currency=rng.choice(["EUR", "EUR", "EUR", "USD"]),
        )
        placed.append((await orders.place(command, Delivery())).order)
    for order in placed * 3:
        current = (await OrderStore(db).by_id(order.id)) or order
        allowed = TRANSITIONS[current.status]
        if allowed and rng.random() < 0.7:
            action = UpdateStatus(action="update_status", id=order.id, status=rng.choice(allowed))
            await orders.act(action, Delivery())


STATUS_LISTS: list[dict[str, object]] = [
    {"status": ["pending"]},
    {"status": ["completed", "cancelled", "refunded"]},
    {"active_only": True},
    {"active_only": True, "status": ["pending", "completed", "on_hold"]},
]
"""List queries by status alone, whose totals come from the rollups."""


async def _both(
    db: AsyncDatabase[Document], client: AsyncMongoClient[Document]
) -> tuple[dict[str, object], dict[str, object]]:
    from_rollups = await global_stats(client, db, "EUR")
    from_orders = await OrderStats(db).aggregate(OrderStatsQuery(), "EUR")
    for filters in STATUS_LISTS:  # list totals by status agree too
        query = ListOrders.model_validate(filters)
        total = (await OrderQueries(db, client, cursors=CURSORS).page(query)).total
        assert total == await db[ORDERS].count_documents(order_filter(query)), filters
    return from_rollups, from_orders


async def test_rollups_with_pending_deltas_equal_the_pipeline_at_every_step(
    db: AsyncDatabase[Document], relay: OutboxRelay, client: AsyncMongoClient[Document]
) -> None:
    await ensure_rollup_indexes(db, "EUR")
    await ensure_rollups(db, "EUR")  # nothing to build yet: marks the rollups as built
    await _workload(db, relay, client)
    pending = await db[ORDERS].count_documents({"rollups_pending.0": {"$exists": True}})
    assert pending == 60

    rollups, pipeline = await _both(db, client)  # everything still pending
    assert rollups == pipeline
    assert pipeline["total_orders"] == 60

    applier = RollupApplier(client, db, currency="EUR", batch=25)
    assert await applier.apply_once() == 25
    rollups, pipeline = await _both(db, client)  # part applied, part pending
    assert rollups == pipeline

    while await applier.apply_once():
        pass
    assert await db[ORDERS].count_documents({"rollups_pending.0": {"$exists": True}}) == 0
    rollups, pipeline = await _both(db, client)
    assert rollups == pipeline
    assert await applier.apply_once() == 0  # nothing is counted twice
    assert (await _both(db, client))[0] == pipeline


async def test_rollups_are_built_from_orders_loaded_directly(
    db: AsyncDatabase[Document], relay: OutboxRelay, client: AsyncMongoClient[Document]
) -> None:
    await _workload(db, relay, client)
    await db[ORDERS].update_many({}, {"$unset": {"rollups_pending": ""}})  # as a bulk load
    await db[ROLLUP_STATE].delete_many({})
    await ensure_rollup_indexes(db, "EUR")
    await ensure_rollups(db, "EUR")

    assert await db[ORDER_COUNTS].count_documents({}) > 0
    rollups, pipeline = await _both(db, client)
    assert rollups == pipeline
    stats = await OrderStats(db, client).compute(OrderStatsQuery(), "EUR")
    assert stats == pipeline


async def test_rollups_an_earlier_version_built_are_rebuilt(
    db: AsyncDatabase[Document], relay: OutboxRelay, client: AsyncMongoClient[Document]
) -> None:
    await ensure_rollup_indexes(db, "EUR")
    await ensure_rollups(db, "EUR")
    await _workload(db, relay, client)
    # as version 1 left them: its marker, and no status totals (it did not keep them)
    await db[ROLLUP_STATE].delete_many({})
    await db[ROLLUP_STATE].insert_one({"_id": "built", "done": True})
    await db[STATUS_COUNTS].drop()

    await ensure_rollups(db, "EUR")
    assert await db[STATUS_COUNTS].count_documents({}) > 0
    rollups, pipeline = await _both(db, client)  # list totals by status are checked too
    assert rollups == pipeline
