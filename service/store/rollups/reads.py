"""What the stats read from the rollups: the stats over every order and the counts by
status, each from the rollups plus the deltas still pending, in one snapshot. Pending are
the deltas of the changes after the rollups feed's checkpoint in that snapshot
(`service.store.feed.pending`): the rollups and the checkpoint move in one transaction, so
each change is counted once, and every change written before the read is counted."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from bson.decimal128 import Decimal128
from pymongo import DESCENDING, AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from orders_vocabulary.money import ZERO, round_money
from orders_vocabulary.statuses import OrderStatus
from service.domain.statuses import CLOSED, NO_REVENUE
from service.store.client import Document
from service.store.feed import FEEDS, pending_after
from service.store.feed import pending as pending_changes
from service.store.rollups.deltas import (
    FEED_PIPELINE,
    ORDER_CUSTOMER,
    ROLLUPS_FEED,
    deltas_of,
    keeps_revenue,
)
from service.store.rollups.schema import CUSTOMER_COUNTS, ORDER_COUNTS, STATUS_COUNTS

TOP_CUSTOMERS = 10
_COUNTS = "__customer_counts"
"""The field that tells a customer's breakdown from the feed's document in the rows of
`_customer_reads`."""


def _customer_reads(customer_id: str) -> list[Document]:
    """Over `feeds`: the rollups feed's document, then the customer's `customer_counts`
    breakdown as `{_COUNTS: {s, d}}` (at most once)."""
    return [
        {"$match": {"_id": ROLLUPS_FEED}},
        {
            "$unionWith": {
                "coll": CUSTOMER_COUNTS,
                "pipeline": [
                    {"$match": {"_id": customer_id}},
                    {"$project": {"_id": 0, _COUNTS: {"s": "$s", "d": "$d"}}},
                ],
            }
        },
    ]


async def _pending(
    db: AsyncDatabase[Document], session: AsyncClientSession
) -> list[Document] | None:
    """The deltas the rollups do not hold in `session`'s snapshot; None while the rollups
    feed is not open: the rollups are not built (or being built again)."""
    changes = await pending_changes(db, ROLLUPS_FEED, FEED_PIPELINE, session)
    return None if changes is None else deltas_of(changes)


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
        pending = await _pending(db, session)
        if pending is None:
            return None
        (sums,) = await (
            await db[ORDER_COUNTS].aggregate(_bucket_sums(currency), session=session)
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


async def customer_stats(
    client: AsyncMongoClient[Document],
    db: AsyncDatabase[Document],
    customer_id: str,
    currency: str,
) -> dict[str, Any] | None:
    """The stats over one customer's orders, from its `customer_counts` breakdown plus the
    pending deltas of its orders, in one snapshot; None while the rollups are not built.
    The rollups feed's checkpoint and the breakdown are read in one aggregation (one round
    trip), then the changes after the checkpoint."""
    async with client.start_session(snapshot=True) as session:
        rows = await (
            await db[FEEDS].aggregate(_customer_reads(customer_id), session=session)
        ).to_list()
        feed = next((row for row in rows if row.get("_id") == ROLLUPS_FEED), None)
        changes = await pending_after(db, feed, FEED_PIPELINE, session)
        if changes is None:
            return None
    pending = deltas_of(changes)
    doc = next((row[_COUNTS] for row in rows if _COUNTS in row), None)
    statuses: dict[tuple[str, str], list[Any]] = defaultdict(lambda: [0, ZERO])
    days: dict[str, list[Any]] = defaultdict(lambda: [0, ZERO])
    for status, by_currency in (doc or {}).get("s", {}).items():
        for cur, counted in by_currency.items():
            statuses[status, cur] = [counted.get("n", 0), Decimal(counted.get("t", ZERO))]
    for day, counted in (doc or {}).get("d", {}).items():
        days[day] = [counted.get("n", 0), Decimal(counted.get("k", {}).get(currency, ZERO))]
    for delta in pending:
        if "day" not in delta or delta[ORDER_CUSTOMER] != customer_id:
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
    rollups are not built."""
    return await _counts(client, db, STATUS_COUNTS, [{"$project": {"n": 1}}], lambda day: True)


async def day_counts(
    client: AsyncMongoClient[Document],
    db: AsyncDatabase[Document],
    first: str | None,
    end: str | None,
) -> dict[str, int] | None:
    """How many orders created from day `first` up to (not including) day `end` (UTC,
    `YYYY-MM-DD`; None: unbounded) have each status, from the buckets of those days plus
    pending deltas, in one snapshot; None while the rollups are not built."""
    ids: Document = {}  # the buckets' `_id`s start with the day: a range of the `_id` index
    if first is not None:
        ids["$gte"] = {"day": first}
    if end is not None:
        ids["$lt"] = {"day": end}
    return await _counts(
        client,
        db,
        ORDER_COUNTS,
        [
            {"$match": {"_id": ids} if ids else {}},
            {"$group": {"_id": "$_id.status", "n": {"$sum": "$n"}}},
        ],
        lambda day: (first is None or day >= first) and (end is None or day < end),
    )


async def _counts(
    client: AsyncMongoClient[Document],
    db: AsyncDatabase[Document],
    rollup: str,
    by_status: list[Document],
    within: Callable[[str], bool],
) -> dict[str, int] | None:
    """Orders by status: the rows `{_id: status, n}` of the `by_status` aggregation over the
    `rollup`, plus the pending bucket deltas of the days `within`, in one snapshot; None
    while the rollups are not built."""
    async with client.start_session(snapshot=True) as session:
        pending = await _pending(db, session)
        if pending is None:
            return None
        rows = await (await db[rollup].aggregate(by_status, session=session)).to_list()
    counts: dict[str, int] = defaultdict(int)
    for row in rows:
        counts[row["_id"]] += row["n"]
    for delta in pending:
        if "day" in delta and within(delta["day"]):
            counts[delta["status"]] += delta["n"]
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
