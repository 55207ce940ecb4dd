"""Building the rollups from the orders, once: when they never were (orders loaded before
this version, or directly into the database) or an earlier version built them. One process
builds under the lease (`lease`); the others wait for it."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

from bson.timestamp import Timestamp
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from orders_vocabulary.money import ZERO
from orders_vocabulary.statuses import OrderStatus
from service.store.client import CREATED_DAY, ORDERS, Document
from service.store.feed import close_feed, open_feed
from service.store.rollups.deltas import ROLLUPS_FEED, breakdown_increments, keeps_revenue
from service.store.rollups.lease import LEASE_SECONDS, LeaseLost, fenced, leased, take_lease
from service.store.rollups.schema import (
    BUILT,
    CUSTOMER_COUNTS,
    ORDER_COUNTS,
    ROLLUP_STATE,
    STATUS_COUNTS,
)

log = logging.getLogger(__name__)

WRITE_CHUNK = 1000
"""Rollup documents a build writes (or removes) per fenced transaction."""

BuildStep = Callable[[str], Awaitable[None]]
"""Called between the steps of a build with the step's name (tests write meanwhile)."""


async def ensure_rollups(
    db: AsyncDatabase[Document],
    currency: str,
    *,
    lease_seconds: float = LEASE_SECONDS,
    between_steps: BuildStep | None = None,
) -> None:
    """Build the rollups from the orders once, if they never were (orders loaded before this
    version, or directly into the database). Runs at start-up, before consuming.

    One process builds, under a lease on the marker that it renews while it works; the
    others wait as long as the lease is renewed, and take the build over only once it
    lapses (its builder died). Every write of a build is fenced by the lease's token, so a
    builder that lost its lease cannot write any more. The rollups are what the orders
    held at one snapshot, and the build opens the rollups feed at the snapshot's cluster
    time: every change after it is added by the feed, so nothing is counted twice or lost.
    Until the build is done, the feed is closed and stats are computed from the orders.
    """
    state = db[ROLLUP_STATE]
    owner = uuid.uuid4().hex
    waiting_logged = False
    while True:
        token = await take_lease(state, owner, lease_seconds)
        if token is None:
            return  # built
        if token == 0:  # another process holds a live lease: wait for it
            if not waiting_logged:
                log.info("another process builds the stats rollups; waiting for it")
                waiting_logged = True
            await asyncio.sleep(min(1.0, lease_seconds / 3))
            continue
        try:
            await leased(db, token, lease_seconds, _build(db, currency, token, between_steps))
        except LeaseLost:
            log.warning("another process took the rollup build over; waiting for it")
            continue
        return


async def _build(
    db: AsyncDatabase[Document], currency: str, token: int, between_steps: BuildStep | None
) -> None:
    async def step(name: str) -> None:
        if between_steps is not None:
            await between_steps(name)

    async def write(rollup: str, docs: list[Document]) -> None:
        async def insert(session: AsyncClientSession) -> None:
            await db[rollup].insert_many(docs, session=session)

        if docs:
            await fenced(db, token, insert)

    log.info("building the stats rollups from the orders")
    await step("leased")

    async def stop_feed(session: AsyncClientSession) -> None:
        await close_feed(db, ROLLUPS_FEED, session)

    await fenced(db, token, stop_feed)  # a reader of an earlier build writes no more
    for rollup in (ORDER_COUNTS, CUSTOMER_COUNTS, STATUS_COUNTS):
        while ids := [
            doc["_id"] for doc in await db[rollup].find({}, {"_id": 1}).limit(WRITE_CHUNK).to_list()
        ]:

            async def delete(
                session: AsyncClientSession, rollup: str = rollup, ids: list[Any] = ids
            ) -> None:
                await db[rollup].delete_many({"_id": {"$in": ids}}, session=session)

            await fenced(db, token, delete)
    await step("emptied")
    async with db.client.start_session(snapshot=True) as snapshot:
        # what the orders hold at one snapshot; the rollups feed adds the changes after it
        buckets = await _bucket_counts(db, snapshot)
        # the cluster time the snapshot reads at, which PyMongo keeps from the first read
        # (it has no public accessor)
        at: Timestamp | None = snapshot._snapshot_time
        assert at is not None  # read at a cluster time: the aggregation above has read
        await step("snapshot")
        statuses: dict[str, int] = defaultdict(int)
        for bucket in buckets:
            statuses[bucket["_id"]["status"]] += bucket["n"]
        await write(ORDER_COUNTS, buckets)
        await write(STATUS_COUNTS, [{"_id": s, "n": n} for s, n in statuses.items() if n])
        await step("counted orders")
        chunk: list[Document] = []
        async for customer in _customer_counts(db, snapshot, currency):
            chunk.append(customer)
            if len(chunk) >= WRITE_CHUNK:
                await write(CUSTOMER_COUNTS, chunk)
                chunk = []
        await write(CUSTOMER_COUNTS, chunk)
    await step("counted customers")

    async def finish(session: AsyncClientSession) -> None:
        await db[ROLLUP_STATE].update_one(
            {"_id": BUILT}, {"$set": {"done": True}, "$unset": {"until": ""}}, session=session
        )
        await open_feed(db, ROLLUPS_FEED, at, session)

    await fenced(db, token, finish)


async def _bucket_counts(
    db: AsyncDatabase[Document], snapshot: AsyncClientSession
) -> list[Document]:
    """`order_counts` as of the snapshot: orders and total per UTC day, status and currency."""
    counts: dict[tuple[str, str, str], list[Any]] = defaultdict(lambda: [0, ZERO])
    cursor = await db[ORDERS].aggregate(
        [
            {
                "$group": {
                    "_id": {
                        "day": CREATED_DAY,
                        "status": "$status",
                        "currency": "$currency",
                    },
                    "n": {"$sum": 1},
                    "t": {"$sum": "$total"},
                }
            }
        ],
        session=snapshot,
    )
    async for row in cursor:
        key = row["_id"]
        counts[key["day"], key["status"], key["currency"]] = [row["n"], row["t"]]
    return [
        {"_id": {"day": day, "status": status, "currency": cur}, "n": n, "t": t}
        for (day, status, cur), (n, t) in counts.items()
        if n or t
    ]


async def _customer_counts(
    db: AsyncDatabase[Document],
    snapshot: AsyncClientSession,
    currency: str,
) -> AsyncIterator[Document]:
    """`customer_counts` as of the snapshot, streamed: orders and kept revenue per currency,
    and the breakdown by status and currency and by day (`breakdown_increments`)."""
    cursor = await db[ORDERS].aggregate(
        [
            {
                "$group": {
                    "_id": {
                        "customer": "$customer_id",
                        "day": CREATED_DAY,
                        "status": "$status",
                        "currency": "$currency",
                    },
                    "n": {"$sum": 1},
                    "t": {"$sum": "$total"},
                }
            },
            {
                "$group": {
                    "_id": "$_id.customer",
                    "rows": {
                        "$push": {
                            "day": "$_id.day",
                            "status": "$_id.status",
                            "currency": "$_id.currency",
                            "n": "$n",
                            "t": "$t",
                        }
                    },
                }
            },
        ],
        session=snapshot,
        allowDiskUse=True,
    )

    def counted(customer: str, rows: list[Document]) -> Document | None:
        doc = _CustomerDocument(customer, currency)
        for row in rows:
            doc.add_orders(row["day"], row["status"], row["currency"], row["n"], row["t"])
        return doc.document()

    async for row in cursor:
        doc = counted(row["_id"], row["rows"])
        if doc is not None:
            yield doc


class _CustomerDocument:
    """One `customer_counts` document as the build computes it."""

    def __init__(self, customer: str, currency: str) -> None:
        self.customer = customer
        self.currency = currency
        self.n = 0
        self.kept: dict[str, Decimal] = {}
        self.fields: dict[str, Any] = defaultdict(int)

    def add_orders(self, day: str, status: str, currency: str, n: int, t: Decimal) -> None:
        """`n` orders of one day, status and currency, `t` in total."""
        self.n += n
        if keeps_revenue(OrderStatus(status)):
            self.kept[currency] = self.kept.get(currency, ZERO) + t
        self._breakdown(day, status, currency, n, t)

    def _breakdown(self, day: str, status: str, currency: str, n: int, t: Decimal) -> None:
        for field, value in breakdown_increments(day, status, currency, n, t).items():
            self.fields[field] += value

    def document(self) -> Document | None:
        fields = {k: v for k, v in self.fields.items() if v}
        if not self.n and not any(self.kept.values()) and not fields:
            return None
        doc: Document = {"_id": self.customer, "n": self.n, "kept": {self.currency: ZERO}}
        doc["kept"] |= self.kept
        for path, value in sorted(fields.items()):
            parent = doc
            *parents, last = path.split(".")
            for name in parents:
                parent = parent.setdefault(name, {})
            parent[last] = value
        return doc
