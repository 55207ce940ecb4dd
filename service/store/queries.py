"""The list query: filters shared with stats, literal search, whitelisted sort, paging."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from orders_vocabulary.statuses import OrderStatus
from schemas.queries import ListOrders, OrderFilters
from service.domain.records import Page
from service.domain.statuses import CLOSED
from service.store.client import ORDERS, Document
from service.store.cursors import CursorCodec
from service.store.documents import ORDER_FIELDS, order_from_document
from service.store.rollups.reads import day_counts, status_counts
from service.store.search import search_clause, text_clause, texts_ready

SORT_FIELDS = {
    "created_at": "created_at",
    "updated_at": "updated_at",
    "total": "total",
    "order_id": "order_id",
    "id": "_id",
    "status": "status",
    "customer_id": "customer_id",
}
MAX_NUMERIC_SEARCH = 2**62


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def order_filter(filters: OrderFilters, *, search: Document | None = None) -> Document:
    """The MongoDB filter for `filters`. Every user value is typed or escaped: no operators,
    no regular expressions from the caller. `search`: the condition for `filters.search`
    from the search texts (`service.store.search`); without it, a regular expression."""
    query: Document = {}
    if filters.customer_id is not None:
        query["customer_id"] = filters.customer_id
    if filters.user_id is not None:
        query["user_id"] = filters.user_id
    status: Document = {}
    if filters.status:
        status["$in"] = sorted({str(s) for s in filters.status})
    if filters.active_only:
        status["$nin"] = sorted(str(s) for s in CLOSED)
    if status:
        query["status"] = status
    created: Document = {}
    if filters.date_from is not None:
        created["$gte"] = _day_start(filters.date_from)
    if filters.date_to is not None:
        created["$lt"] = _day_start(filters.date_to + timedelta(days=1))
    if created:
        query["created_at"] = created
    if filters.search is not None:
        query["$or"] = _search(filters.search, search)
    return query


def _search(text: str, clause: Document | None) -> list[Document]:
    clauses: list[Document] = [clause or text_clause(text)]
    digits = text.strip()
    if digits.isascii() and digits.isdigit() and int(digits) <= MAX_NUMERIC_SEARCH:
        clauses += [{"order_id": int(digits)}, {"_id": int(digits)}]
    return clauses


class OrderQueries:
    def __init__(
        self,
        db: AsyncDatabase[Document],
        client: AsyncMongoClient[Document] | None = None,
        *,
        cursors: CursorCodec,
    ) -> None:
        """With `client`, a count by status alone comes from the stats rollups; `cursors`
        issues and checks the keyset cursors."""
        self._db = db
        self._cursors = cursors
        self._orders = db[ORDERS]
        self._client = client
        self._texts_ready = False

    async def search_texts_ready(self) -> bool:
        """Whether searches may read the search texts; once they may, they always may."""
        if not self._texts_ready:
            self._texts_ready = await texts_ready(self._db)
        return self._texts_ready

    async def page(self, query: ListOrders) -> Page:
        """One page of orders, the total matching, the last page number (at least 1) and a
        cursor for the page after this one (None on the last page)."""
        search = None
        if query.search is not None and await self.search_texts_ready():
            search = await search_clause(self._db, query.search)
        where = order_filter(query, search=search)
        field = SORT_FIELDS[query.order_by]
        direction = ASCENDING if query.order_direction == "asc" else DESCENDING
        unique = field in {"_id", "order_id"}  # no ties to break
        sort = [(field, direction)] if unique else [(field, direction), ("_id", direction)]
        after = _after(query, self._cursors.decode(query)) if query.cursor else None
        skip = 0 if after else (query.page - 1) * query.per_page
        if query.search is not None and (search is None or "$in" not in search["search_text"]):
            # by regular expression
            docs, total = await self._search_page(where, after, sort, skip, query.per_page + 1)
        else:
            found = {"$and": [where, after]} if after and where else (after or where)
            cursor = self._orders.find(found, ORDER_FIELDS).sort(sort).skip(skip)
            docs = await cursor.limit(query.per_page + 1).to_list()
            # A page numbered from the first match that holds the last one has counted them
            # all: no second read (most customers' orders fit on their first page).
            last_page = not after and len(docs) <= query.per_page and (docs or not skip)
            total = skip + len(docs) if last_page else await self._count(where)
        more, docs = len(docs) > query.per_page, docs[: query.per_page]
        return Page(
            [order_from_document(doc) for doc in docs],
            total,
            max(1, math.ceil(total / query.per_page)),
            self._cursors.encode(query, docs[-1][field], docs[-1]["_id"]) if more else None,
        )

    async def _count(self, where: Document) -> int:
        """Matching orders; for no filter at all, the collection's own count, and for a
        filter by status and/or creation day alone, the rollups (a full count of a million
        orders reads every one of them, and a count by status or day an index entry per
        order)."""
        if not where:
            return await self._orders.estimated_document_count()
        if self._client is not None and set(where) <= {"status", "created_at"}:
            statuses = set(map(str, OrderStatus))
            if "status" in where:
                statuses &= set(where["status"].get("$in", statuses))
                statuses -= set(where["status"].get("$nin", ()))
            counted = await (
                status_counts(self._client, self._db)
                if "created_at" not in where
                else day_counts(self._client, self._db, *_days(where["created_at"]))
            )
            if counted is not None:  # else the rollups are being built
                return sum(counted.get(s, 0) for s in statuses)
        return await self._orders.count_documents(where)

    async def _search_page(
        self,
        where: Document,
        after: Document | None,
        sort: list[tuple[str, int]],
        skip: int,
        limit: int,
    ) -> tuple[list[Document], int]:
        """A search by regular expression reads the `search_text` index once for both the
        page and the count: the regular expression cannot narrow the index range, so a
        second pass would cost as much as the first."""
        page: list[Document] = [{"$match": after}] if after else []
        page += [
            {"$sort": dict(sort)},
            {"$skip": skip},
            {"$limit": limit},
            {"$project": ORDER_FIELDS},
        ]
        pipeline = [{"$match": where}, {"$facet": {"page": page, "total": [{"$count": "n"}]}}]
        result = await (await self._orders.aggregate(pipeline, allowDiskUse=True)).to_list()
        counted = result[0]["total"]
        return result[0]["page"], counted[0]["n"] if counted else 0


def _days(created: Document) -> tuple[str | None, str | None]:
    """The first day and the day after the last of a `created_at` filter (whole UTC days)."""
    first, end = created.get("$gte"), created.get("$lt")
    return (
        None if first is None else first.strftime("%Y-%m-%d"),
        None if end is None else end.strftime("%Y-%m-%d"),
    )


def _after(query: ListOrders, position: tuple[Any, int]) -> Document:
    """Keyset condition: strictly after `position` in the query's sort order."""
    value, last_id = position
    beyond = "$gt" if query.order_direction == "asc" else "$lt"
    field = SORT_FIELDS[query.order_by]
    if field == "_id":
        return {"_id": {beyond: last_id}}
    return {"$or": [{field: {beyond: value}}, {field: value, "_id": {beyond: last_id}}]}
