"""What the stats read from the rollups: the stats over every order and the counts by
status, each from the rollups plus the deltas still pending, in one snapshot."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

from bson.decimal128 import Decimal128
from pymongo import DESCENDING, AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from orders_vocabulary.money import ZERO, round_money
from orders_vocabulary.statuses import OrderStatus
from service.domain.statuses import CLOSED, NO_REVENUE
from service.store.client import ORDERS, Document
from service.store.rollups.deltas import PENDING, PENDING_DELTAS, UNWOUND, keeps_revenue
from service.store.rollups.schema import (
    BUILT,
    CUSTOMER_COUNTS,
    ORDER_COUNTS,
    ROLLUP_STATE,
    STATUS_COUNTS,
    built,
)

TOP_CUSTOMERS = 10
TOTALS = {"n": 1, "kept": 1}
"""What the stats over every order read of a customer (not its breakdown)."""


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
) -> dict[str, Any] | None:
    """The stats over every order, from the rollups plus pending deltas, in one snapshot;
    None while the rollups are not built (being built: count the orders instead)."""
    async with client.start_session(snapshot=True) as session:
        if not await built(db, session):
            return None
        (sums,) = await (
            await db[ORDER_COUNTS].aggregate(_bucket_sums(currency), session=session)
        ).to_list()
        pending = await (
            await db[ORDERS].aggregate(list(PENDING_DELTAS), session=session)
        ).to_list()
        touched = sorted({d["customer_id"] for d in pending if "customer_id" in d})
        field = f"kept.{currency}"
        top = await (
            db[CUSTOMER_COUNTS]
            .find({"n": {"$gt": 0}}, TOTALS, session=session)
            .sort([(field, DESCENDING), ("n", DESCENDING), ("_id", 1)])
            .limit(TOP_CUSTOMERS + len(touched))
            .to_list()
        )
        unique = await db[CUSTOMER_COUNTS].count_documents({"n": {"$gt": 0}}, session=session)
        repeat = await db[CUSTOMER_COUNTS].count_documents({"n": {"$gt": 1}}, session=session)
        before = {
            doc["_id"]: doc
            for doc in await db[CUSTOMER_COUNTS]
            .find({"_id": {"$in": touched}}, TOTALS, session=session)
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


_COUNTS = "__customer_counts"
_BUILT = "__built"
"""The fields that tell the breakdown and the build marker from the pending deltas among
the rows of `_customer_reads` (a delta has neither)."""


_MARKER: Document = {
    "$unionWith": {
        "coll": ROLLUP_STATE,
        "pipeline": [
            {"$match": {"_id": BUILT}},
            {"$project": {"_id": 0, _BUILT: {"$eq": ["$done", True]}}},
        ],
    }
}
"""The stage that adds the build marker, as `{_BUILT: done}`, to an aggregation's rows."""


def _customer_reads(customer_id: str) -> list[Document]:
    """Over the orders: the customer's pending deltas, then its `customer_counts` breakdown
    as `{_COUNTS: {s, d}}` and the build marker as `{_BUILT: done}` (each at most once)."""
    return [
        {"$match": {**PENDING, "customer_id": customer_id}},
        *UNWOUND,
        {
            "$unionWith": {
                "coll": CUSTOMER_COUNTS,
                "pipeline": [
                    {"$match": {"_id": customer_id}},
                    {"$project": {"_id": 0, _COUNTS: {"s": "$s", "d": "$d"}}},
                ],
            }
        },
        _MARKER,
    ]


async def customer_stats(
    client: AsyncMongoClient[Document],
    db: AsyncDatabase[Document],
    customer_id: str,
    currency: str,
) -> dict[str, Any] | None:
    """The stats over one customer's orders, from its `customer_counts` breakdown plus the
    deltas still pending in its orders, in one snapshot; None while the rollups are not
    built. One aggregation reads all three (the deltas, the breakdown and the build marker,
    through `$unionWith`): a request costs one round trip, not three."""
    async with client.start_session(snapshot=True) as session:
        rows = await (
            await db[ORDERS].aggregate(_customer_reads(customer_id), session=session)
        ).to_list()
    if not any(row.get(_BUILT) for row in rows):
        return None
    doc = next((row[_COUNTS] for row in rows if _COUNTS in row), None)
    pending = [row for row in rows if _COUNTS not in row and _BUILT not in row]
    statuses: dict[tuple[str, str], list[Any]] = defaultdict(lambda: [0, ZERO])
    days: dict[str, list[Any]] = defaultdict(lambda: [0, ZERO])
    for status, by_currency in (doc or {}).get("s", {}).items():
        for cur, counted in by_currency.items():
            statuses[status, cur] = [counted.get("n", 0), Decimal(counted.get("t", ZERO))]
    for day, counted in (doc or {}).get("d", {}).items():
        days[day] = [counted.get("n", 0), Decimal(counted.get("k", {}).get(currency, ZERO))]
    for delta in pending:
        if "day" not in delta:
            continue
        status = statuses[delta["status"], delta["currency"]]
        status[0] += delta["n"]
        status[1] += delta["t"]
        day = days[delta["day"]]
        day[0] += delta["n"]
        if keeps_revenue(OrderStatus(delta["status"])) and delta["currency"] == currency:
            day[1] += delta["t"]
    orders = sum(n for n, _ in statuses.values())
    revenue = sum(
        (
            t
            for (s, cur), (_, t) in statuses.items()
            if cur == currency and keeps_revenue(OrderStatus(s))
        ),
        ZERO,
    )
    customers = {customer_id: {"customer_id": customer_id, "orders": orders, "revenue": revenue}}
    return _stats(
        statuses, days, customers, unique=int(orders > 0), repeat=int(orders > 1), currency=currency
    )


async def status_counts(
    client: AsyncMongoClient[Document], db: AsyncDatabase[Document]
) -> dict[str, int] | None:
    """How many orders have each status, from the rollups plus pending deltas, in one
    snapshot (a count by status need not read an index entry per order); None while the
    rollups are not built. One aggregation, as `customer_stats`."""
    by_status = [{"$group": {"_id": "$status", "n": {"$sum": "$n"}}}]
    return await _counts(
        client,
        db,
        [*PENDING_DELTAS, {"$match": {"day": {"$exists": True}}}, *by_status],
        {"coll": STATUS_COUNTS, "pipeline": [{"$project": {"n": 1}}]},
    )


async def day_counts(
    client: AsyncMongoClient[Document],
    db: AsyncDatabase[Document],
    first: str | None,
    end: str | None,
) -> dict[str, int] | None:
    """How many orders created from day `first` up to (not including) day `end` (UTC,
    `YYYY-MM-DD`; None: unbounded) have each status, from the buckets of those days plus
    pending deltas, in one snapshot; None while the rollups are not built. One aggregation,
    as `customer_stats`."""
    days: Document = {}
    if first is not None:
        days["$gte"] = first
    if end is not None:
        days["$lt"] = end
    ids: Document = {}  # the buckets' `_id`s start with the day: a range of the `_id` index
    if first is not None:
        ids["$gte"] = {"day": first}
    if end is not None:
        ids["$lt"] = {"day": end}
    return await _counts(
        client,
        db,
        [
            *PENDING_DELTAS,
            {"$match": {"day": days or {"$exists": True}}},
            {"$group": {"_id": "$status", "n": {"$sum": "$n"}}},
        ],
        {
            "coll": ORDER_COUNTS,
            "pipeline": [
                {"$match": {"_id": ids} if ids else {}},
                {"$group": {"_id": "$_id.status", "n": {"$sum": "$n"}}},
            ],
        },
    )


async def _counts(
    client: AsyncMongoClient[Document],
    db: AsyncDatabase[Document],
    pending: list[Document],
    counted: Document,
) -> dict[str, int] | None:
    """Orders by status: the rows `{_id: status, n}` of the `pending` stages over the
    orders and of the `counted` rollup (a `$unionWith`), summed, read with the build marker
    in one aggregation in one snapshot; None while the rollups are not built."""
    async with client.start_session(snapshot=True) as session:
        rows = await (
            await db[ORDERS].aggregate(
                [*pending, {"$unionWith": counted}, _MARKER], session=session
            )
        ).to_list()
    if not any(row.get(_BUILT) for row in rows):
        return None
    counts: dict[str, int] = defaultdict(int)
    for row in rows:
        if _BUILT not in row:
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
            if keeps_revenue(OrderStatus(delta["status"])) and delta["currency"] == currency:
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
        if not keeps_revenue(OrderStatus(status)):
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
