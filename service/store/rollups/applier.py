"""Adding the deltas to the rollups: the rollups feed's handler (`service.store.feed`). Each
batch of changes the feed reads is summed here and added to the rollups in the transaction
that moves the feed's checkpoint past it, so each delta is counted exactly once, whatever
crashes or runs twice. The orders are not written again."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from pymongo import UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from orders_vocabulary.money import ZERO
from service.store.client import Document
from service.store.rollups.deltas import ORDER_CUSTOMER, breakdown_increments, deltas_of
from service.store.rollups.schema import CUSTOMER_COUNTS, ORDER_COUNTS, STATUS_COUNTS


class Sums:
    """Deltas summed as the rollups take them: `buckets` by day, status and currency;
    `customers` by customer and currency; `breakdown`, the bucket deltas by their order's
    customer, day, status and currency. Rows are `{_id: {...}, n, t}` (`n, kept` for
    `customers`); a bucket's `_id` has its fields in the one order an upsert matches on."""

    def __init__(self, deltas: Iterable[Document]) -> None:
        buckets: dict[tuple[str, str, str], list[Any]] = defaultdict(lambda: [0, ZERO])
        customers: dict[tuple[str, str], list[Any]] = defaultdict(lambda: [0, ZERO])
        breakdown: dict[tuple[str, str, str, str], list[Any]] = defaultdict(lambda: [0, ZERO])
        for delta in deltas:
            if "day" in delta:
                key = (delta["day"], delta["status"], delta["currency"])
                _add(buckets[key], delta["n"], delta["t"])
                _add(breakdown[(delta[ORDER_CUSTOMER], *key)], delta["n"], delta["t"])
            else:
                _add(customers[delta["customer_id"], delta["currency"]], delta["n"], delta["kept"])
        self.buckets = [
            {"_id": {"day": d, "status": s, "currency": c}, "n": n, "t": t}
            for (d, s, c), (n, t) in buckets.items()
        ]
        self.customers = [
            {"_id": {"customer": customer, "currency": c}, "n": n, "kept": kept}
            for (customer, c), (n, kept) in customers.items()
        ]
        self.breakdown = [
            {"_id": {"customer": customer, "day": d, "status": s, "currency": c}, "n": n, "t": t}
            for (customer, d, s, c), (n, t) in breakdown.items()
        ]


def _add(row: list[Any], n: int, amount: Decimal) -> None:
    row[0] += n
    row[1] += amount


class RollupApplier:
    def __init__(self, db: AsyncDatabase[Document], *, currency: str) -> None:
        self._db = db
        self._currency = currency

    async def deliver(self, changes: Sequence[Document]) -> None:
        """Nothing before the checkpoint: the rollups are written with it (`apply`)."""

    async def apply(self, changes: Sequence[Document], session: AsyncClientSession) -> None:
        """Add the deltas of `changes` to the rollups, in the feed's transaction."""
        sums = Sums(deltas_of(changes))
        await self._add_to_buckets(sums.buckets, session)
        await self._add_to_statuses(sums.buckets, session)
        await self._add_to_customers(sums.customers, sums.breakdown, session)

    async def _add_to_buckets(self, buckets: list[Document], session: AsyncClientSession) -> None:
        if not buckets:
            return
        await self._db[ORDER_COUNTS].bulk_write(
            [
                UpdateOne(
                    {"_id": b["_id"]},
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
