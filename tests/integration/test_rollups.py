"""The stats rollups are exact: rollups plus pending deltas equal the pipeline over the orders
(and list totals by status equal a count of the orders), before, during and after the
rollups feed applies them, and when built from orders loaded directly."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from orders_vocabulary.statuses import OrderStatus
from schemas.commands import UpdateStatus
from schemas.queries import ListOrders, OrderStatsQuery
from service.application.delivery import Delivery
from service.application.usecases import OrderService
from service.domain.errors import InvalidTransition
from service.domain.statuses import TRANSITIONS
from service.store.client import ORDERS, Document
from service.store.feed import ChangeFeed, pending
from service.store.orders import OrderStore
from service.store.queries import OrderQueries, order_filter
from service.store.rollups.applier import RollupApplier
from service.store.rollups.build import ensure_rollups
from service.store.rollups.deltas import FEED_PIPELINE, ROLLUPS_FEED
from service.store.rollups.lease import LeaseLost, fenced
from service.store.rollups.reads import customer_stats, global_stats
from service.store.rollups.schema import (
    BUILT,
    CUSTOMER_COUNTS,
    ORDER_COUNTS,
    ROLLUP_STATE,
    STATUS_COUNTS,
    ensure_rollup_indexes,
)
from service.store.stats import OrderStats
from tests.e2e.waiting import eventually
from tests.integration.builders import CURSORS, place_order

CUSTOMERS = [f"cust-{n}" for n in range(7)]
LEASE = 0.6


def rollups_feed(db: AsyncDatabase[Document], owner: str, batch: int = 1000) -> ChangeFeed:
    return ChangeFeed(
        db,
        ROLLUPS_FEED,
        RollupApplier(db, currency="EUR"),
        owner=owner,
        pipeline=FEED_PIPELINE,
        lease_seconds=LEASE,
        max_batch=batch,
    )


async def apply_pending(
    db: AsyncDatabase[Document], *, limit: int | None = None, batch: int = 1000
) -> int:
    """Add the pending deltas to the rollups (or those of `limit` changes), as the rollups
    feed's reader does; how many changes."""
    feed = rollups_feed(db, "test", batch)
    token = await feed.take()
    assert token is not None
    try:
        return await feed.catch_up(token, limit=limit)
    finally:
        await feed.release(token)


async def pending_changes(db: AsyncDatabase[Document]) -> int:
    async with db.client.start_session(snapshot=True) as session:
        changes = await pending(db, ROLLUPS_FEED, FEED_PIPELINE, session)
    assert changes is not None  # built: the feed is open
    return len(changes)


@contextlib.asynccontextmanager
async def feeding(db: AsyncDatabase[Document], *owners: str) -> AsyncIterator[None]:
    """The rollups feed's reader running in each of `owners` (other processes)."""
    tasks = [asyncio.create_task(rollups_feed(db, owner, batch=5).run()) for owner in owners]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _clock(seed: int) -> Iterator[datetime]:
    rng = random.Random(seed)
    start = datetime(2025, 10, 1, tzinfo=UTC)
    while True:
        yield start + timedelta(days=rng.randrange(5), minutes=rng.randrange(600))


async def _workload(db: AsyncDatabase[Document], client: AsyncMongoClient[Document]) -> None:
    rng = random.Random(7)
    times = _clock(7)
    orders = OrderService(
        OrderStore(db), OrderQueries(db, cursors=CURSORS), OrderStats(db, client),
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
    {"date_from": "2025-10-02", "date_to": "2025-10-03"},
    {"date_from": "2025-10-03"},
    {"date_to": "2025-10-01"},
    {"date_from": "2025-10-02", "date_to": "2025-10-02", "status": ["pending", "on_hold"]},
    {"date_from": "2025-10-01", "date_to": "2025-10-04", "active_only": True},
    {"date_from": "2025-11-01"},
]
"""List queries by status and/or creation day alone, whose totals come from the rollups."""


async def _both(
    db: AsyncDatabase[Document], client: AsyncMongoClient[Document]
) -> tuple[dict[str, object], dict[str, object]]:
    from_rollups = await global_stats(client, db, "EUR")
    assert from_rollups is not None  # built
    from_orders = await OrderStats(db).aggregate(OrderStatsQuery(), "EUR")
    for filters in STATUS_LISTS:  # list totals by status agree too
        query = ListOrders.model_validate(filters)
        total = (await OrderQueries(db, client, cursors=CURSORS).page(query)).total
        assert total == await db[ORDERS].count_documents(order_filter(query)), filters
    for customer in [*CUSTOMERS, "nobody"]:  # and so do the stats of each customer
        for currency in ("EUR", "USD"):
            by_customer = await customer_stats(client, db, customer, currency)
            pipeline = await OrderStats(db).aggregate(
                OrderStatsQuery(customer_id=customer), currency
            )
            assert by_customer == pipeline, (customer, currency)
    return from_rollups, from_orders


async def test_rollups_with_pending_deltas_equal_the_pipeline_at_every_step(
    db: AsyncDatabase[Document], client: AsyncMongoClient[Document]
) -> None:
    await ensure_rollup_indexes(db, "EUR")
    await ensure_rollups(db, "EUR")  # nothing to build yet: marks the rollups as built
    await _workload(db, client)
    written = await pending_changes(db)
    assert written > 60  # the places and the changes

    rollups, pipeline = await _both(db, client)  # everything still pending
    assert rollups == pipeline
    assert pipeline["total_orders"] == 60

    assert await apply_pending(db, limit=25, batch=25) == 25
    assert await pending_changes(db) == written - 25
    rollups, pipeline = await _both(db, client)  # part applied, part pending
    assert rollups == pipeline

    assert await apply_pending(db) == written - 25
    assert await pending_changes(db) == 0
    rollups, pipeline = await _both(db, client)
    assert rollups == pipeline
    assert await apply_pending(db) == 0  # nothing is counted twice
    assert (await _both(db, client))[0] == pipeline


async def test_rollups_are_built_from_orders_loaded_directly(
    db: AsyncDatabase[Document], client: AsyncMongoClient[Document]
) -> None:
    await _workload(db, client)
    await db[ORDERS].update_many({}, {"$unset": {"rollup": ""}})  # as a bulk load
    await db[ROLLUP_STATE].delete_many({})
    await ensure_rollup_indexes(db, "EUR")
    await ensure_rollups(db, "EUR")

    assert await db[ORDER_COUNTS].count_documents({}) > 0
    rollups, pipeline = await _both(db, client)
    assert rollups == pipeline
    stats = await OrderStats(db, client).compute(OrderStatsQuery(), "EUR")
    assert stats == pipeline


async def test_rollups_an_earlier_version_built_are_rebuilt(
    db: AsyncDatabase[Document], client: AsyncMongoClient[Document]
) -> None:
    await ensure_rollup_indexes(db, "EUR")
    await ensure_rollups(db, "EUR")
    await _workload(db, client)
    # as version 1 left them: its marker, and no status totals (it did not keep them)
    await db[ROLLUP_STATE].delete_many({})
    await db[ROLLUP_STATE].insert_one({"_id": "built", "done": True})
    await db[STATUS_COUNTS].drop()

    await ensure_rollups(db, "EUR")  # counts every order; the feed adds what comes after
    assert await pending_changes(db) == 0
    assert await db[STATUS_COUNTS].count_documents({}) > 0
    rollups, pipeline = await _both(db, client)  # list totals by status are checked too
    assert rollups == pipeline


async def test_rollups_of_the_previous_shape_are_rebuilt_with_each_customers_breakdown(
    db: AsyncDatabase[Document], client: AsyncMongoClient[Document]
) -> None:
    await ensure_rollup_indexes(db, "EUR")
    await ensure_rollups(db, "EUR")
    await _workload(db, client)
    await apply_pending(db)
    # as version 2 left them: its marker, customers without their breakdown
    await db[ROLLUP_STATE].delete_many({})
    await db[ROLLUP_STATE].insert_one({"_id": "built-v2", "done": True})
    await db[CUSTOMER_COUNTS].update_many({}, {"$unset": {"s": "", "d": ""}})

    await ensure_rollups(db, "EUR")
    assert await db[CUSTOMER_COUNTS].count_documents({"s": {"$exists": True}}) == len(CUSTOMERS)
    await _both(db, client)  # every customer's stats equal the pipeline's
    stats = await OrderStats(db, client).compute(OrderStatsQuery(customer_id="cust-3"), "EUR")
    assert stats == await OrderStats(db).aggregate(OrderStatsQuery(customer_id="cust-3"), "EUR")


async def test_each_customers_rollup_is_exact_under_concurrent_writers_and_appliers(
    db: AsyncDatabase[Document], client: AsyncMongoClient[Document]
) -> None:
    await ensure_rollup_indexes(db, "EUR")
    await ensure_rollups(db, "EUR")
    writers = [Writers(db, client, seed=seed) for seed in (21, 22, 23)]

    async def write(writer: Writers) -> None:
        for _ in range(6):
            await writer.burst(places=3, changes=4)

    async with feeding(db, "one", "two"):  # two processes, one reader at a time
        await asyncio.gather(*(write(writer) for writer in writers))
        await _both(db, client)  # mid-way: part applied, part pending
    await apply_pending(db)
    assert await pending_changes(db) == 0
    await _both(db, client)
    for customer in CUSTOMERS:  # served from the rollup, equal to the pipeline
        query = OrderStatsQuery(customer_id=customer)
        served = await OrderStats(db, client).compute(query, "EUR")
        assert served == await OrderStats(db).aggregate(query, "EUR")


class Writers:
    """Places and changes orders through the use cases, as other processes would meanwhile."""

    def __init__(
        self,
        db: AsyncDatabase[Document],
        client: AsyncMongoClient[Document],
        *,
        seed: int = 11,
    ) -> None:
        self._rng = random.Random(seed)
        times = _clock(seed)
        self._store = OrderStore(db)
        self._orders = OrderService(
            self._store, OrderQueries(db, client, cursors=CURSORS), OrderStats(db, client),
            default_currency="EUR", clock=lambda: next(times),
        )  # fmt: skip
        self.ids: list[int] = []

    async def burst(self, places: int = 4, changes: int = 6) -> None:
        rng = self._rng
        for _ in range(places):
            total = Decimal(rng.randrange(100, 50_000)) / 100
            command = place_order(
                rng.choice(CUSTOMERS),
                items=[{"product_id": 1, "product_name": "Thing", "quantity": 1, "price": total}],
                currency=rng.choice(["EUR", "EUR", "USD"]),
            )
            self.ids.append((await self._orders.place(command, Delivery())).order.id)
        for id in rng.sample(self.ids, min(changes, len(self.ids))):
            current = await self._store.by_id(id)
            assert current is not None
            if TRANSITIONS[current.status]:
                status = rng.choice(TRANSITIONS[current.status])
                action = UpdateStatus(action="update_status", id=id, status=status)
                with contextlib.suppress(InvalidTransition):  # another writer moved it first
                    await self._orders.act(action, Delivery())


async def _direct_count(db: AsyncDatabase[Document]) -> dict[str, object]:
    """Totals, orders per status and EUR revenue, counted here from the orders themselves."""
    by_status = {str(s): 0 for s in OrderStatus}
    revenue = Decimal(0)
    async for doc in db[ORDERS].find({}, {"status": 1, "total": 1, "currency": 1}):
        by_status[doc["status"]] += 1
        if doc["currency"] == "EUR" and doc["status"] not in ("cancelled", "refunded"):
            revenue += Decimal(str(doc["total"]))
    return {
        "total_orders": sum(by_status.values()),
        "status_breakdown": by_status,
        "total_revenue": revenue.quantize(Decimal("0.01")),
    }


async def test_a_rebuild_is_exact_while_other_processes_write(
    db: AsyncDatabase[Document], client: AsyncMongoClient[Document]
) -> None:
    await ensure_rollup_indexes(db, "EUR")
    await ensure_rollups(db, "EUR")
    writers = Writers(db, client)
    for _ in range(5):
        await writers.burst()
    await apply_pending(db, batch=7)
    for _ in range(2):  # some deltas still pending when the rebuild starts
        await writers.burst()
    await db[ROLLUP_STATE].delete_many({})  # as a new version of the rollups would find them

    steps: list[str] = []

    async def between_steps(step: str) -> None:  # other processes write between every step
        steps.append(step)
        await writers.burst()

    stop = asyncio.Event()

    async def background() -> None:  # and all along: writers, and another worker's reader
        while not stop.is_set():
            await writers.burst(places=1, changes=2)

    async with feeding(db, "other"):
        task = asyncio.create_task(background())
        try:
            await ensure_rollups(db, "EUR", between_steps=between_steps)
        finally:
            stop.set()
            await task
    assert len(steps) >= 3
    await apply_pending(db)

    stats = await OrderStats(db, client).compute(OrderStatsQuery(), "EUR")
    direct = await _direct_count(db)
    assert {key: stats[key] for key in direct} == direct
    assert direct["total_orders"] == len(writers.ids)
    rollups, pipeline = await _both(db, client)
    assert rollups == pipeline


async def test_one_build_at_a_time_while_its_lease_is_renewed(
    db: AsyncDatabase[Document], client: AsyncMongoClient[Document]
) -> None:
    await ensure_rollup_indexes(db, "EUR")
    writers = Writers(db, client)
    for _ in range(3):
        await writers.burst()
    builds: list[str] = []
    release = asyncio.Event()

    async def first_steps(step: str) -> None:
        if step == "leased":
            builds.append("first")
        if step == "snapshot":
            await release.wait()  # a slow build: several lease lengths

    async def second_steps(step: str) -> None:
        if step == "leased":
            builds.append("second")

    first = asyncio.create_task(
        ensure_rollups(db, "EUR", lease_seconds=3.0, between_steps=first_steps)
    )

    async def leased() -> bool:
        return builds == ["first"]

    await eventually(leased, timeout=30, what="the first build")
    second = asyncio.create_task(
        ensure_rollups(db, "EUR", lease_seconds=3.0, between_steps=second_steps)
    )
    await asyncio.sleep(8.0)  # over two lease lengths: the renewed lease holds
    assert builds == ["first"]
    assert not second.done()  # it waits for the build, whose stats are not served yet
    assert await global_stats(client, db, "EUR") is None
    release.set()
    await asyncio.wait_for(asyncio.gather(first, second), 60)
    assert builds == ["first"]
    rollups, pipeline = await _both(db, client)
    assert rollups == pipeline


async def test_a_build_whose_builder_died_is_taken_over_and_fenced(
    db: AsyncDatabase[Document], client: AsyncMongoClient[Document]
) -> None:
    await ensure_rollup_indexes(db, "EUR")
    writers = Writers(db, client)
    for _ in range(3):
        await writers.burst()
    stuck = asyncio.Event()

    async def dies_midway(step: str) -> None:
        if step == "snapshot":
            stuck.set()
            await asyncio.Event().wait()  # never goes on

    dead = asyncio.create_task(
        ensure_rollups(db, "EUR", lease_seconds=1.0, between_steps=dies_midway)
    )
    await asyncio.wait_for(stuck.wait(), 30)
    dead.cancel()  # it stops renewing; its lease lapses
    with contextlib.suppress(asyncio.CancelledError):
        await dead
    await writers.burst()

    async def on_step(_: str) -> None:
        await writers.burst(places=1, changes=2)

    await asyncio.wait_for(ensure_rollups(db, "EUR", lease_seconds=1.0, between_steps=on_step), 60)
    marker = await db[ROLLUP_STATE].find_one({"_id": BUILT})
    assert marker is not None
    assert marker["done"] is True
    assert marker["token"] == 2

    async def write(_: AsyncClientSession) -> None:  # what the first builder would write
        await db[ORDER_COUNTS].insert_one({"_id": "stale"})

    with pytest.raises(LeaseLost):
        await fenced(db, 1, write)
    assert await db[ORDER_COUNTS].count_documents({"_id": "stale"}) == 0
    await apply_pending(db)
    stats = await OrderStats(db, client).compute(OrderStatsQuery(), "EUR")
    direct = await _direct_count(db)
    assert {key: stats[key] for key in direct} == direct
