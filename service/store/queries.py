"""The list query: filters shared with stats, literal search, whitelisted sort, paging."""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime, time, timedelta

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase

from schemas.queries import ListOrders, OrderFilters
from service.domain.order import Order
from service.domain.statuses import CLOSED
from service.store.client import ORDERS, Document
from service.store.documents import ORDER_FIELDS, order_from_document

SEARCH_FIELDS = (
    "customer_id",
    "billing.first_name",
    "billing.last_name",
    "billing.email",
    "billing.phone",
)
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


def order_filter(filters: OrderFilters) -> Document:
    """The MongoDB filter for `filters`. Every user value is typed or escaped: no operators,
    no regular expressions from the caller."""
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
        query["$or"] = _search(filters.search)
    return query


def _search(text: str) -> list[Document]:
    literal = {"$regex": re.escape(text), "$options": "i"}
    clauses: list[Document] = [{field: literal} for field in SEARCH_FIELDS]
    digits = text.strip()
    if digits.isascii() and digits.isdigit() and int(digits) <= MAX_NUMERIC_SEARCH:
        clauses += [{"order_id": int(digits)}, {"_id": int(digits)}]
    return clauses


class OrderQueries:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._orders = db[ORDERS]

    async def page(self, query: ListOrders) -> tuple[list[Order], int, int]:
        """One page of orders, the total matching and the last page number (at least 1)."""
        where = order_filter(query)
        direction = ASCENDING if query.order_direction == "asc" else DESCENDING
        sort = [(SORT_FIELDS[query.order_by], direction)]
        if query.order_by != "id":
            sort.append(("_id", direction))
        cursor = (
            self._orders.find(where, ORDER_FIELDS)
            .sort(sort)
            .skip((query.page - 1) * query.per_page)
            .limit(query.per_page)
        )
        orders = [order_from_document(doc) async for doc in cursor]
        total = await self._orders.count_documents(where)
        return orders, total, max(1, math.ceil(total / query.per_page))
