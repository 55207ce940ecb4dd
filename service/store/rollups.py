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
import contextlib
import logging
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from bson.decimal128 import Decimal128
from pymongo import DESCENDING, AsyncMongoClient, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from orders_vocabulary.money import ZERO, round_money
from orders_vocabulary.statuses import OrderStatus
from service.domain.model import Order
from service.domain.order import Change
from service.domain.statuses import CLOSED, NO_REVENUE
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
LEASE_SECONDS = 30.0
"""How long a rollup build's lease lasts unless renewed; its builder renews it every third."""
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
WRITE_CHUNK = 1000
"""Rollup documents a build writes (or removes) per fenced transaction."""
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
        # Only into built rollups. The write to the marker makes this transaction conflict
        # with a build taking its lease, so none of its writes lands in a build's rollups.
        built = await self._db[ROLLUP_STATE].update_one(
            {"_id": BUILT, "done": True}, {"$inc": {"applied": 1}}, session=session
        )
        if not built.matched_count:
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


class LeaseLost(Exception):
    """Another process took the rollup build over: this one's writes are refused."""


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
    held at one snapshot minus the deltas still pending in that snapshot: whatever changes
    meanwhile stays pending and is applied afterwards, so nothing is counted twice or lost.
    Until the build is done, appliers apply nothing and stats are computed from the orders.
    """
    state = db[ROLLUP_STATE]
    owner = uuid.uuid4().hex
    waiting_logged = False
    while True:
        token = await _take_lease(state, owner, lease_seconds)
        if token is None:
            return  # built
        if token == 0:  # another process holds a live lease: wait for it
            if not waiting_logged:
                log.info("another process builds the stats rollups; waiting for it")
                waiting_logged = True
            await asyncio.sleep(min(1.0, lease_seconds / 3))
            continue
        try:
            await _leased(db, token, lease_seconds, _build(db, currency, token, between_steps))
        except LeaseLost:
            log.warning("another process took the rollup build over; waiting for it")
            continue
        return


async def _take_lease(
    state: AsyncCollection[Document], owner: str, lease_seconds: float
) -> int | None:
    """The build's new fencing token when this process now holds the lease; 0 when another
    process holds a live one; None when the rollups are built. Times are the server's."""
    until = {"$add": ["$$NOW", int(lease_seconds * 1000)]}
    try:
        await state.insert_one(
            {
                "_id": BUILT,
                "done": False,
                "token": 1,
                "owner": owner,
                "until": datetime.now(UTC) + timedelta(seconds=lease_seconds),
            }
        )
    except DuplicateKeyError:
        pass
    else:
        return 1
    marker = await state.find_one({"_id": BUILT})
    if marker is None:
        return 0  # removed meanwhile: try again
    if marker.get("done", True):
        return None
    token = int(marker.get("token", 0)) + 1
    lapsed = await state.update_one(
        {
            "_id": BUILT,
            "done": False,
            "token": marker.get("token"),
            "$expr": {"$lt": [{"$ifNull": ["$until", EPOCH]}, "$$NOW"]},
        },
        [{"$set": {"token": token, "owner": owner, "until": until}}],
    )
    if lapsed.modified_count:
        log.warning("the rollup build of another process lapsed; building them here")
        return token
    return 0


async def _leased(
    db: AsyncDatabase[Document], token: int, lease_seconds: float, build: Awaitable[None]
) -> None:
    """Run `build`, renewing the lease every third of its length; LeaseLost if it lapsed."""
    work = asyncio.ensure_future(build)
    try:
        while True:
            done, _ = await asyncio.wait({work}, timeout=lease_seconds / 3)
            if done:
                return work.result()
            renewed = await db[ROLLUP_STATE].update_one(
                {"_id": BUILT, "done": False, "token": token},
                [{"$set": {"until": {"$add": ["$$NOW", int(lease_seconds * 1000)]}}}],
            )
            if not renewed.matched_count:
                raise LeaseLost
    finally:
        if not work.done():
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError, LeaseLost):
                await work


async def _fenced(
    db: AsyncDatabase[Document],
    token: int,
    write: Callable[[AsyncClientSession], Awaitable[None]],
) -> None:
    """`write` in a transaction that first bumps the marker under `token`: once another
    process has taken the lease (a write to the marker), this can no longer commit."""

    async def body(session: AsyncClientSession) -> None:
        fence = await db[ROLLUP_STATE].update_one(
            {"_id": BUILT, "done": False, "token": token},
            {"$inc": {"writes": 1}},
            session=session,
        )
        if not fence.matched_count:
            raise LeaseLost
        await write(session)

    async with db.client.start_session() as session:
        await session.with_transaction(body)


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
            await _fenced(db, token, insert)

    log.info("building the stats rollups from the orders")
    await step("leased")
    for rollup in (ORDER_COUNTS, CUSTOMER_COUNTS, STATUS_COUNTS):
        while ids := [
            doc["_id"] for doc in await db[rollup].find({}, {"_id": 1}).limit(WRITE_CHUNK).to_list()
        ]:

            async def delete(
                session: AsyncClientSession, rollup: str = rollup, ids: list[Any] = ids
            ) -> None:
                await db[rollup].delete_many({"_id": {"$in": ids}}, session=session)

            await _fenced(db, token, delete)
    await step("emptied")
    async with db.client.start_session(snapshot=True) as snapshot:
        # what the orders hold at one snapshot, minus the deltas pending in it (they are in
        # the orders already, and the applier adds them afterwards)
        pending = await (
            await db[ORDERS].aggregate(
                [
                    {"$match": PENDING},
                    {"$unwind": "$rollups_pending"},
                    {"$replaceWith": "$rollups_pending"},
                ],
                session=snapshot,
            )
        ).to_list()
        await step("snapshot")
        buckets = await _bucket_counts(db, snapshot, pending)
        statuses: dict[str, int] = defaultdict(int)
        for bucket in buckets:
            statuses[bucket["_id"]["status"]] += bucket["n"]
        await write(ORDER_COUNTS, buckets)
        await write(STATUS_COUNTS, [{"_id": s, "n": n} for s, n in statuses.items() if n])
        await step("counted orders")
        chunk: list[Document] = []
        async for customer in _customer_counts(db, snapshot, pending, currency):
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

    await _fenced(db, token, finish)


async def _bucket_counts(
    db: AsyncDatabase[Document], snapshot: AsyncClientSession, pending: list[Document]
) -> list[Document]:
    """`order_counts` as of the snapshot: orders and total per UTC day, status and currency."""
    counts: dict[tuple[str, str, str], list[Any]] = defaultdict(lambda: [0, ZERO])
    cursor = await db[ORDERS].aggregate(
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
            }
        ],
        session=snapshot,
    )
    async for row in cursor:
        key = row["_id"]
        counts[key["day"], key["status"], key["currency"]] = [row["n"], row["t"]]
    for delta in pending:
        if "day" in delta:
            bucket = counts[delta["day"], delta["status"], delta["currency"]]
            bucket[0] -= delta["n"]
            bucket[1] -= delta["t"]
    return [
        {"_id": {"day": day, "status": status, "currency": cur}, "n": n, "t": t}
        for (day, status, cur), (n, t) in counts.items()
        if n or t
    ]


async def _customer_counts(
    db: AsyncDatabase[Document],
    snapshot: AsyncClientSession,
    pending: list[Document],
    currency: str,
) -> AsyncIterator[Document]:
    """`customer_counts` as of the snapshot, streamed: orders and kept revenue per currency."""
    deltas: dict[str, list[Document]] = defaultdict(list)
    for delta in pending:
        if "customer_id" in delta:
            deltas[delta["customer_id"]].append(delta)
    kept = {"$not": [{"$in": ["$status", sorted(str(s) for s in NO_REVENUE)]}]}
    cursor = await db[ORDERS].aggregate(
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
        ],
        session=snapshot,
    )

    def counted(customer: str, n: int, by_currency: dict[str, Decimal]) -> Document | None:
        for delta in deltas.pop(customer, ()):
            n -= delta["n"]
            by_currency[delta["currency"]] = (
                by_currency.get(delta["currency"], ZERO) - delta["kept"]
            )
        if not n and not any(by_currency.values()):
            return None
        return {"_id": customer, "n": n, "kept": {currency: ZERO} | by_currency}

    async for row in cursor:
        doc = counted(row["_id"], row["n"], {k["k"]: k["v"] for k in row["kept"]})
        if doc is not None:
            yield doc
    for customer in list(deltas):  # deltas of customers without orders (none, normally)
        doc = counted(customer, 0, {})
        if doc is not None:
            yield doc


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


async def _built(db: AsyncDatabase[Document], session: AsyncClientSession) -> bool:
    marker = await db[ROLLUP_STATE].find_one({"_id": BUILT}, {"done": 1}, session=session)
    return bool(marker is not None and marker.get("done"))


async def global_stats(
    client: AsyncMongoClient[Document], db: AsyncDatabase[Document], currency: str
) -> dict[str, Any] | None:
    """The stats over every order, from the rollups plus pending deltas, in one snapshot;
    None while the rollups are not built (being built: count the orders instead)."""
    async with client.start_session(snapshot=True) as session:
        if not await _built(db, session):
            return None
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
) -> dict[str, int] | None:
    """How many orders have each status, from the rollups plus pending deltas, in one
    snapshot (a count by status need not read an index entry per order); None while the
    rollups are not built."""
    by_status = [{"$group": {"_id": "$status", "n": {"$sum": "$n"}}}]
    async with client.start_session(snapshot=True) as session:
        if not await _built(db, session):
            return None
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
