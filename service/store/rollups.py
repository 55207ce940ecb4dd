"""Counts kept exactly beside the orders, so stats over everything need not read every order.

Every change pushes its deltas into the order's `rollups_pending` array in the same
single-document write as the change itself. The applier moves them into `order_counts` (per
UTC day, status and currency: orders and their total), `status_counts` (orders per status)
and `customer_counts` (per customer: orders, and the kept revenue per currency) in a
transaction that also removes them from the order, so each delta is counted exactly once,
whatever crashes or runs twice. Stats without filters, and list totals by status, read the
rollups plus whatever is still pending, in one snapshot.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from bson.decimal128 import Decimal128
from pymongo import DESCENDING, AsyncMongoClient, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from service.domain.money import ZERO, round_money
from service.domain.order import Change, Order
from service.domain.statuses import CLOSED, NO_REVENUE, OrderStatus
from service.store.client import ORDERS, Document

log = logging.getLogger(__name__)

ORDER_COUNTS = "order_counts"
CUSTOMER_COUNTS = "customer_counts"
STATUS_COUNTS = "status_counts"
ROLLUP_STATE = "rollup_state"
BUILT = "built-v2"
"""The marker of a completed build; a new name when the rollups change shape, so a worker
of this version rebuilds rollups an earlier version made (v2 added `status_counts`)."""
TOP_CUSTOMERS = 10
BUILD_WAIT_SECONDS = 120
PENDING: Document = {"rollups_pending._d": {"$exists": True}}
"""Orders with deltas not yet in the rollups (served by a partial index)."""


def _kept(status: OrderStatus) -> bool:
    return status not in NO_REVENUE


def _bucket(order: Order, status: OrderStatus, sign: int) -> Document:
    return {
        "_d": uuid.uuid4().hex,
        "day": order.created_at.strftime("%Y-%m-%d"),
        "status": str(status),
        "currency": order.currency,
        "n": sign,
        "t": order.total * sign,
    }


def _customer(order: Order, orders: int, kept: Decimal) -> Document:
    return {
        "_d": uuid.uuid4().hex,
        "customer_id": order.customer_id,
        "currency": order.currency,
        "n": orders,
        "kept": kept,
    }


def place_deltas(order: Order) -> list[Document]:
    kept = order.total if _kept(order.status) else ZERO
    return [_bucket(order, order.status, 1), _customer(order, 1, kept)]


def change_deltas(change: Change) -> list[Document]:
    before, after = change.before, change.after
    if before.status == after.status:
        return []
    deltas = [_bucket(before, before.status, -1), _bucket(after, after.status, 1)]
    if _kept(before.status) != _kept(after.status):
        kept = after.total if _kept(after.status) else -after.total
        deltas.append(_customer(after, 0, kept))
    return deltas


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
    ) -> None:
        self._client = client
        self._db = db
        self._currency = currency
        self._batch = batch

    async def apply_once(self) -> int:
        """Move one batch of pending deltas into the rollups; return how many orders."""
        async with self._client.start_session() as session:
            return await session.with_transaction(self._apply)

    async def _apply(self, session: AsyncClientSession) -> int:
        # mongod sums the deltas; only the sums and the delta ids travel back
        unwound = [{"$unwind": "$rollups_pending"}, {"$replaceWith": "$rollups_pending"}]
        cursor = await self._db[ORDERS].aggregate(
            [
                {"$match": PENDING},
                {"$limit": self._batch},
                {"$project": {"rollups_pending": 1}},
                {
                    "$facet": {
                        "orders": [{"$project": {"d": "$rollups_pending._d"}}],
                        "buckets": [
                            *unwound,
                            {"$match": {"day": {"$exists": True}}},
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
                            *unwound,
                            {"$match": {"customer_id": {"$exists": True}}},
                            {
                                "$group": {
                                    "_id": {"customer": "$customer_id", "currency": "$currency"},
                                    "n": {"$sum": "$n"},
                                    "kept": {"$sum": "$kept"},
                                }
                            },
                        ],
                    }
                },
            ],
            session=session,
        )
        (sums,) = await cursor.to_list()
        if not sums["orders"]:
            return 0
        if sums["buckets"]:
            await self._db[ORDER_COUNTS].bulk_write(
                [
                    UpdateOne(
                        {"_id": _bucket_id(b["_id"])},
                        {"$inc": {"n": b["n"], "t": b["t"]}},
                        upsert=True,
                    )
                    for b in sums["buckets"]
                ],
                ordered=False,
                session=session,
            )
        statuses: dict[str, int] = defaultdict(int)
        for b in sums["buckets"]:
            statuses[b["_id"]["status"]] += b["n"]
        if any(statuses.values()):
            await self._db[STATUS_COUNTS].bulk_write(
                [
                    UpdateOne({"_id": status}, {"$inc": {"n": n}}, upsert=True)
                    for status, n in statuses.items()
                    if n
                ],
                ordered=False,
                session=session,
            )
        customers: dict[str, Document] = {}
        for c in sums["customers"]:
            inc = customers.setdefault(
                c["_id"]["customer"], {"n": 0, f"kept.{self._currency}": ZERO}
            )
            inc["n"] += c["n"]
            field = f"kept.{c['_id']['currency']}"
            inc[field] = inc.get(field, ZERO) + c["kept"]
        if customers:
            await self._db[CUSTOMER_COUNTS].bulk_write(
                [
                    UpdateOne({"_id": customer}, {"$inc": inc}, upsert=True)
                    for customer, inc in customers.items()
                ],
                ordered=False,
                session=session,
            )
        # delta ids are unique, so one update removes exactly the deltas summed above
        await self._db[ORDERS].update_many(
            {"_id": {"$in": [doc["_id"] for doc in sums["orders"]]}},
            {
                "$pull": {
                    "rollups_pending": {
                        "_d": {"$in": [d for doc in sums["orders"] for d in doc["d"]]}
                    }
                }
            },
            session=session,
        )
        return len(sums["orders"])

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


async def ensure_rollups(db: AsyncDatabase[Document], currency: str) -> None:
    """Build the rollups from the orders once, if they never were (orders loaded before this
    version, or directly into the database). Runs at start-up, before consuming."""
    state = db[ROLLUP_STATE]
    try:  # one worker claims the build; the others wait for it (bounded)
        await state.insert_one({"_id": BUILT, "done": False, "at": datetime.now(UTC)})
    except DuplicateKeyError:
        for _ in range(BUILD_WAIT_SECONDS):
            marker = await state.find_one({"_id": BUILT})
            if marker is None or marker.get("done", True):
                return
            await asyncio.sleep(1.0)
        log.warning("the rollup build of another worker did not finish; building them here")
    log.info("building the stats rollups from the orders")
    for rollup in (ORDER_COUNTS, CUSTOMER_COUNTS, STATUS_COUNTS):
        await db[rollup].delete_many({})
    orders = db[ORDERS]
    await orders.update_many(PENDING, {"$set": {"rollups_pending": []}})
    await (
        await orders.aggregate(
            [
                {
                    "$group": {
                        "_id": {
                            "day": {
                                "$dateToString": {
                                    "format": "%Y-%m-%d",
                                    "date": "$created_at",
                                    "timezone": "UTC",
                                }
                            },
                            "status": "$status",
                            "currency": "$currency",
                        },
                        "n": {"$sum": 1},
                        "t": {"$sum": "$total"},
                    }
                },
                {"$merge": {"into": ORDER_COUNTS}},
            ]
        )
    ).to_list()
    kept = {"$not": [{"$in": ["$status", sorted(str(s) for s in NO_REVENUE)]}]}
    await (
        await orders.aggregate(
            [
                {
                    "$group": {
                        "_id": {"customer": "$customer_id", "currency": "$currency"},
                        "n": {"$sum": 1},
                        "kept": {"$sum": {"$cond": [kept, "$total", Decimal("0")]}},
                    }
                },
                {
                    "$group": {
                        "_id": "$_id.customer",
                        "n": {"$sum": "$n"},
                        "kept": {"$push": {"k": "$_id.currency", "v": "$kept"}},
                    }
                },
                {
                    "$set": {
                        "kept": {
                            "$mergeObjects": [{currency: Decimal("0")}, {"$arrayToObject": "$kept"}]
                        }
                    }
                },
                {"$merge": {"into": CUSTOMER_COUNTS}},
            ]
        )
    ).to_list()
    await (
        await db[ORDER_COUNTS].aggregate(
            [
                {"$group": {"_id": "$_id.status", "n": {"$sum": "$n"}}},
                {"$merge": {"into": STATUS_COUNTS}},
            ]
        )
    ).to_list()
    await state.update_one({"_id": BUILT}, {"$set": {"done": True}}, upsert=True)


async def ensure_rollup_indexes(db: AsyncDatabase[Document], currency: str) -> None:
    await db[CUSTOMER_COUNTS].create_index(
        [(f"kept.{currency}", DESCENDING), ("n", DESCENDING), ("_id", 1)],
        name=f"top_{currency}",
    )
    await db[CUSTOMER_COUNTS].create_index([("n", 1)], name="orders")
    await db[ORDERS].create_index(
        [("rollups_pending._d", 1)],
        name="rollups_pending",
        partialFilterExpression=PENDING,
    )


def _bucket_sums(currency: str) -> list[Document]:
    """The buckets summed in mongod: by status and currency (counts, revenue per currency)
    and by day (orders, and the revenue that counts: kept, in `currency`)."""
    kept = {"$not": [{"$in": ["$_id.status", sorted(str(s) for s in NO_REVENUE)]}]}
    counted = {"$and": [kept, {"$eq": ["$_id.currency", currency]}]}
    return [
        {"$match": {"n": {"$ne": 0}}},
        {
            "$facet": {
                "statuses": [
                    {
                        "$group": {
                            "_id": {"status": "$_id.status", "currency": "$_id.currency"},
                            "n": {"$sum": "$n"},
                            "t": {"$sum": "$t"},
                        }
                    }
                ],
                "days": [
                    {
                        "$group": {
                            "_id": "$_id.day",
                            "n": {"$sum": "$n"},
                            "t": {"$sum": {"$cond": [counted, "$t", Decimal128("0")]}},
                        }
                    }
                ],
            }
        },
    ]


async def global_stats(
    client: AsyncMongoClient[Document], db: AsyncDatabase[Document], currency: str
) -> dict[str, Any]:
    """The stats over every order, from the rollups plus pending deltas, in one snapshot."""
    async with client.start_session(snapshot=True) as session:
        (sums,) = await (
            await db[ORDER_COUNTS].aggregate(_bucket_sums(currency), session=session)
        ).to_list()
        pending = await (
            await db[ORDERS].aggregate(
                [
                    {"$match": PENDING},
                    {"$unwind": "$rollups_pending"},
                    {"$replaceWith": "$rollups_pending"},
                ],
                session=session,
            )
        ).to_list()
        touched = sorted({d["customer_id"] for d in pending if "customer_id" in d})
        field = f"kept.{currency}"
        top = await (
            db[CUSTOMER_COUNTS]
            .find({"n": {"$gt": 0}}, session=session)
            .sort([(field, DESCENDING), ("n", DESCENDING), ("_id", 1)])
            .limit(TOP_CUSTOMERS + len(touched))
            .to_list()
        )
        unique = await db[CUSTOMER_COUNTS].count_documents({"n": {"$gt": 0}}, session=session)
        repeat = await db[CUSTOMER_COUNTS].count_documents({"n": {"$gt": 1}}, session=session)
        before = {
            doc["_id"]: doc
            for doc in await db[CUSTOMER_COUNTS]
            .find({"_id": {"$in": touched}}, session=session)
            .to_list()
        }
    return _combine(
        sums=sums,
        pending=pending,
        top=top,
        before=before,
        unique=unique,
        repeat=repeat,
        currency=currency,
    )


async def status_counts(
    client: AsyncMongoClient[Document], db: AsyncDatabase[Document]
) -> dict[str, int]:
    """How many orders have each status, from the rollups plus pending deltas, in one
    snapshot (a count by status need not read an index entry per order)."""
    by_status = [{"$group": {"_id": "$status", "n": {"$sum": "$n"}}}]
    async with client.start_session(snapshot=True) as session:
        counted = await db[STATUS_COUNTS].find({}, session=session).to_list()
        pending = await (
            await db[ORDERS].aggregate(
                [
                    {"$match": PENDING},
                    {"$unwind": "$rollups_pending"},
                    {"$replaceWith": "$rollups_pending"},
                    {"$match": {"day": {"$exists": True}}},
                    *by_status,
                ],
                session=session,
            )
        ).to_list()
    counts: dict[str, int] = defaultdict(int)
    for row in (*counted, *pending):
        counts[row["_id"]] += row["n"]
    return dict(counts)


def _combine(
    *,
    sums: Document,
    pending: list[Document],
    top: list[Document],
    before: dict[str, Document],
    unique: int,
    repeat: int,
    currency: str,
) -> dict[str, Any]:
    statuses: dict[tuple[str, str], list[Any]] = defaultdict(lambda: [0, ZERO])
    for row in sums["statuses"]:
        statuses[row["_id"]["status"], row["_id"]["currency"]] = [row["n"], Decimal(row["t"])]
    days: dict[str, list[Any]] = defaultdict(lambda: [0, ZERO])
    for row in sums["days"]:
        days[row["_id"]] = [row["n"], Decimal(row["t"])]
    customers = {doc["_id"]: _customer_view(doc, currency) for doc in top}
    for customer_id, doc in before.items():
        customers[customer_id] = _customer_view(doc, currency)
    for delta in pending:
        if "day" in delta:
            status = statuses[delta["status"], delta["currency"]]
            status[0] += delta["n"]
            status[1] += delta["t"]
            day = days[delta["day"]]
            day[0] += delta["n"]
            if _kept(OrderStatus(delta["status"])) and delta["currency"] == currency:
                day[1] += delta["t"]
            continue
        cid = delta["customer_id"]
        was = customers.setdefault(cid, {"customer_id": cid, "orders": 0, "revenue": ZERO})
        was_n = was["orders"]
        was["orders"] += delta["n"]
        if delta["currency"] == currency:
            was["revenue"] += delta["kept"]
        unique += (was_n == 0 < was["orders"]) - (was["orders"] == 0 < was_n)
        repeat += (was_n <= 1 < was["orders"]) - (was["orders"] <= 1 < was_n)
    return _stats(statuses, days, customers, unique=unique, repeat=repeat, currency=currency)


def _customer_view(doc: Document, currency: str) -> dict[str, Any]:
    return {
        "customer_id": doc["_id"],
        "orders": doc.get("n", 0),
        "revenue": Decimal(doc.get("kept", {}).get(currency, ZERO)),
    }


def _stats(
    statuses: dict[tuple[str, str], list[Any]],
    days: dict[str, list[Any]],
    customers: dict[str, dict[str, Any]],
    *,
    unique: int,
    repeat: int,
    currency: str,
) -> dict[str, Any]:
    breakdown = {str(s): 0 for s in OrderStatus}
    by_currency: dict[str, Decimal] = defaultdict(lambda: ZERO)
    kept_currency: dict[str, int] = defaultdict(int)
    revenue, counted, total, active = ZERO, 0, 0, 0
    for (status, cur), (n, t) in statuses.items():
        if n == 0:
            continue
        breakdown[status] += n
        total += n
        if OrderStatus(status) not in CLOSED:
            active += n
        if not _kept(OrderStatus(status)):
            continue
        by_currency[cur] += t
        kept_currency[cur] += n
        if cur == currency:
            revenue += t
            counted += n
    ranked = sorted(
        (c for c in customers.values() if c["orders"] > 0),
        key=lambda c: (-c["revenue"], -c["orders"], c["customer_id"]),
    )[:TOP_CUSTOMERS]
    return {
        "total_orders": total,
        "total_revenue": round_money(revenue),
        "average_order_value": round_money(revenue / counted) if counted else ZERO,
        "active_orders": active,
        **{f"{status}_orders": n for status, n in breakdown.items()},
        "status_breakdown": breakdown,
        "revenue_by_currency": {
            cur: round_money(t) for cur, t in sorted(by_currency.items()) if kept_currency[cur]
        },
        "revenue_by_day": [
            {"date": day, "orders": n, "revenue": round_money(t)}
            for day, (n, t) in sorted(days.items())
            if n
        ],
        "top_customers": [
            {
                "customer_id": c["customer_id"],
                "orders": c["orders"],
                "revenue": round_money(c["revenue"]),
            }
            for c in ranked
        ],
        "unique_customers": unique,
        "repeat_customers": repeat,
    }
