"""Moving pending deltas into the rollups: one batch of orders per transaction, which sums
their deltas in mongod, adds the sums to the rollups and removes the deltas from the orders,
so each delta is counted exactly once. The same update removes the order's events this
process has published (service/store/outbox.py `PublishedEvents`): one write of the order
for both."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from pymongo import AsyncMongoClient, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from orders_vocabulary.money import ZERO
from service.store.client import ORDERS, Document
from service.store.outbox import PublishedEvents
from service.store.rollups.deltas import ORDER_CUSTOMER, PENDING, UNWOUND, breakdown_increments
from service.store.rollups.schema import (
    BUILT,
    CUSTOMER_COUNTS,
    ORDER_COUNTS,
    ROLLUP_STATE,
    STATUS_COUNTS,
)

log = logging.getLogger(__name__)


def _sums(batch: int, skip: list[int]) -> list[Document]:
    """The aggregation over the orders that sums the deltas of up to `batch` orders with
    pending ones (but those in `skip`): `orders` (each order's `_id` and its delta ids `d`),
    `buckets` (by day, status and currency), `customers` (by customer and currency) and
    `breakdown` (the bucket deltas by the order's customer, day, status and currency)."""
    buckets = [*UNWOUND, {"$match": {"day": {"$exists": True}}}]
    return [
        {"$match": {**PENDING, "_id": {"$nin": skip}} if skip else PENDING},
        {"$limit": batch},
        {"$project": {"rollups_pending": 1, "customer_id": 1}},
        {
            "$facet": {
                "orders": [{"$project": {"d": "$rollups_pending._d"}}],
                "buckets": [
                    *buckets,
                    {
                        "$group": {
                            "_id": {
                                "day": "$day",
                                "status": "$status",
                                "currency": "$currency",
                            },
                            "n": {"$sum": "$n"},
                            "t": {"$sum": "$t"},
                        }
                    },
                ],
                "customers": [
                    *UNWOUND,
                    {"$match": {"customer_id": {"$exists": True}}},
                    {
                        "$group": {
                            "_id": {"customer": "$customer_id", "currency": "$currency"},
                            "n": {"$sum": "$n"},
                            "kept": {"$sum": "$kept"},
                        }
                    },
                ],
                "breakdown": [
                    *buckets,
                    {
                        "$group": {
                            "_id": {
                                "customer": f"${ORDER_CUSTOMER}",
                                "day": "$day",
                                "status": "$status",
                                "currency": "$currency",
                            },
                            "n": {"$sum": "$n"},
                            "t": {"$sum": "$t"},
                        }
                    },
                ],
            }
        },
    ]


def _bucket_id(key: Document) -> Document:
    """A bucket's `_id` with its fields in the one order an upsert matches on."""
    return {"day": key["day"], "status": key["status"], "currency": key["currency"]}


class RollupApplier:
    def __init__(
        self,
        client: AsyncMongoClient[Document],
        db: AsyncDatabase[Document],
        *,
        currency: str,
        batch: int = 2000,
        published: PublishedEvents | None = None,
    ) -> None:
        self._client = client
        self._db = db
        self._currency = currency
        self._batch = batch
        self._published = published
        self._removed: Mapping[int, frozenset[str]] = {}
        """The published events the last attempt of the transaction removed."""

    async def apply_once(self) -> int:
        """Move one batch of pending deltas into the rollups; return how many orders."""
        self._removed = {}
        if self._published is None:
            return await self._transaction()
        with self._published.round():
            applied = await self._transaction()
            self._published.forget(self._removed)
        return applied

    async def _transaction(self) -> int:
        async with self._client.start_session() as session:
            return await session.with_transaction(self._apply)

    async def run(self, interval: float) -> None:
        """Apply pending deltas until cancelled; outages are waited out."""
        while True:
            try:
                while await self.apply_once() >= self._batch:
                    pass
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("applying rollups failed; retrying", exc_info=True)
            await asyncio.sleep(interval)

    async def _apply(self, session: AsyncClientSession) -> int:
        """One batch, in the transaction of `session`; how many orders it took deltas from."""
        self._removed = {}
        sums = await self._sum_pending(session)
        if not sums["orders"] or not await self._into_built_rollups(session):
            return 0
        await self._add_to_buckets(sums["buckets"], session)
        await self._add_to_statuses(sums["buckets"], session)
        await self._add_to_customers(sums["customers"], sums["breakdown"], session)
        await self._remove_applied(sums["orders"], session)
        return len(sums["orders"])

    async def _sum_pending(self, session: AsyncClientSession) -> Document:
        """mongod sums the deltas; only the sums and the delta ids travel back."""
        skip = [] if self._published is None else self._published.in_flight()
        cursor = await self._db[ORDERS].aggregate(_sums(self._batch, skip), session=session)
        (sums,) = await cursor.to_list()
        return sums

    async def _into_built_rollups(self, session: AsyncClientSession) -> bool:
        """Only into built rollups. The write to the marker makes this transaction conflict
        with a build taking its lease, so none of its writes lands in a build's rollups."""
        built = await self._db[ROLLUP_STATE].update_one(
            {"_id": BUILT, "done": True}, {"$inc": {"applied": 1}}, session=session
        )
        return bool(built.matched_count)

    async def _add_to_buckets(self, buckets: list[Document], session: AsyncClientSession) -> None:
        if not buckets:
            return
        await self._db[ORDER_COUNTS].bulk_write(
            [
                UpdateOne(
                    {"_id": _bucket_id(b["_id"])},
                    {"$inc": {"n": b["n"], "t": b["t"]}},
                    upsert=True,
                )
                for b in buckets
            ],
            ordered=False,
            session=session,
        )

    async def _add_to_statuses(self, buckets: list[Document], session: AsyncClientSession) -> None:
        statuses: dict[str, int] = defaultdict(int)
        for b in buckets:
            statuses[b["_id"]["status"]] += b["n"]
        if not any(statuses.values()):
            return
        await self._db[STATUS_COUNTS].bulk_write(
            [
                UpdateOne({"_id": status}, {"$inc": {"n": n}}, upsert=True)
                for status, n in statuses.items()
                if n
            ],
            ordered=False,
            session=session,
        )

    async def _add_to_customers(
        self, sums: list[Document], breakdown: list[Document], session: AsyncClientSession
    ) -> None:
        """Each customer's orders and kept revenue, and its breakdown by status and currency
        and by day (`breakdown_increments`)."""
        customers: dict[str, Document] = {}
        for row in breakdown:
            key = row["_id"]
            inc = customers.setdefault(key["customer"], {})
            for field, value in breakdown_increments(
                key["day"], key["status"], key["currency"], row["n"], row["t"]
            ).items():
                inc[field] = inc.get(field, 0) + value
        for c in sums:
            inc = customers.setdefault(c["_id"]["customer"], {})
            inc["n"] = inc.get("n", 0) + c["n"]
            inc.setdefault(f"kept.{self._currency}", ZERO)
            field = f"kept.{c['_id']['currency']}"
            inc[field] = inc.get(field, ZERO) + c["kept"]
        if not customers:
            return
        await self._db[CUSTOMER_COUNTS].bulk_write(
            [
                UpdateOne({"_id": customer}, {"$inc": inc}, upsert=True)
                for customer, inc in customers.items()
                if inc
            ],
            ordered=False,
            session=session,
        )

    async def _remove_applied(self, orders: list[Document], session: AsyncClientSession) -> None:
        """Delta ids are unique, so one update removes exactly the deltas summed; event ids
        are unique too, so the same update removes the events published of these orders."""
        ids: list[Any] = [d for doc in orders for d in doc["d"]]
        pull: Document = {"rollups_pending": {"_d": {"$in": ids}}}
        order_ids = [doc["_id"] for doc in orders]
        self._removed = {} if self._published is None else self._published.of(order_ids)
        if self._removed:
            events = [event for ids in self._removed.values() for event in ids]
            pull["outbox"] = {"event_id": {"$in": events}}
        await self._db[ORDERS].update_many(
            {"_id": {"$in": order_ids}}, {"$pull": pull}, session=session
        )
