"""The stats pipeline: one aggregation over the same filters as the list."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from bson.decimal128 import Decimal128
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from orders_vocabulary.money import ZERO, round_money
from orders_vocabulary.statuses import OrderStatus
from schemas.queries import OrderFilters
from service.domain.statuses import CLOSED, NO_REVENUE
from service.store.client import CREATED_DAY, ORDERS, STATS_FIELDS, Document
from service.store.queries import order_filter
from service.store.rollups.reads import customer_stats, global_stats
from service.store.search import search_clause, texts_ready

TOP_CUSTOMERS = 10


def stats_pipeline(
    filters: OrderFilters, currency: str, *, search: Document | None = None
) -> list[Document]:
    """Revenue counts orders in `currency` that are not cancelled or refunded; `search` as
    for `order_filter`."""
    counts = {
        "$and": [
            {"$not": [{"$in": ["$status", sorted(str(s) for s in NO_REVENUE)]}]},
            {"$eq": ["$currency", currency]},
        ]
    }
    revenue = {"$cond": [counts, "$total", Decimal128("0")]}
    return [
        {"$match": order_filter(filters, search=search)},
        # only what the index by customer carries: stats by customer never fetch an order
        {"$project": {"_id": 0, **dict.fromkeys(STATS_FIELDS, 1)}},
        {
            "$facet": {
                "totals": [
                    {
                        "$group": {
                            "_id": None,
                            "orders": {"$sum": 1},
                            "revenue": {"$sum": revenue},
                            "revenue_orders": {"$sum": {"$cond": [counts, 1, 0]}},
                            "active": {
                                "$sum": {
                                    "$cond": [
                                        {"$in": ["$status", sorted(str(s) for s in CLOSED)]},
                                        0,
                                        1,
                                    ]
                                }
                            },
                        }
                    }
                ],
                "statuses": [{"$group": {"_id": "$status", "orders": {"$sum": 1}}}],
                "currencies": [
                    {"$match": {"status": {"$nin": sorted(str(s) for s in NO_REVENUE)}}},
                    {"$group": {"_id": "$currency", "revenue": {"$sum": "$total"}}},
                    {"$sort": {"_id": 1}},
                ],
                "days": [
                    {
                        "$group": {
                            "_id": CREATED_DAY,
                            "orders": {"$sum": 1},
                            "revenue": {"$sum": revenue},
                        }
                    },
                    {"$sort": {"_id": 1}},
                ],
                "customers": [
                    {
                        "$group": {
                            "_id": "$customer_id",
                            "orders": {"$sum": 1},
                            "revenue": {"$sum": revenue},
                        }
                    },
                    {
                        "$group": {
                            "_id": None,
                            "unique": {"$sum": 1},
                            "repeat": {"$sum": {"$cond": [{"$gt": ["$orders", 1]}, 1, 0]}},
                            "top": {
                                "$topN": {
                                    "n": TOP_CUSTOMERS,
                                    "sortBy": {"revenue": -1, "orders": -1, "_id": 1},
                                    "output": {
                                        "customer_id": "$_id",
                                        "orders": "$orders",
                                        "revenue": "$revenue",
                                    },
                                }
                            },
                        }
                    },
                ],
            }
        },
    ]


def _money(value: Any) -> Decimal:
    """Aggregation sums arrive as Decimal (decoded Decimal128), or int 0 on an empty group."""
    return round_money(Decimal(value))


def stats_view(result: Document) -> dict[str, Any]:
    """The contract's `data` for `orders.stats` from the pipeline's one document."""
    totals = (
        result["totals"] or [{"orders": 0, "revenue": ZERO, "revenue_orders": 0, "active": 0}]
    )[0]
    breakdown = {str(s): 0 for s in OrderStatus}
    for row in result["statuses"]:
        breakdown[row["_id"]] = row["orders"]
    customers = (result["customers"] or [{"unique": 0, "repeat": 0, "top": []}])[0]
    revenue = _money(totals["revenue"])
    counted = totals["revenue_orders"]
    return {
        "total_orders": totals["orders"],
        "total_revenue": revenue,
        "average_order_value": round_money(revenue / counted) if counted else ZERO,
        "active_orders": totals["active"],
        **{f"{status}_orders": count for status, count in breakdown.items()},
        "status_breakdown": breakdown,
        "revenue_by_currency": {row["_id"]: _money(row["revenue"]) for row in result["currencies"]},
        "revenue_by_day": [
            {"date": row["_id"], "orders": row["orders"], "revenue": _money(row["revenue"])}
            for row in result["days"]
        ],
        "top_customers": [
            {
                "customer_id": c["customer_id"],
                "orders": c["orders"],
                "revenue": _money(c["revenue"]),
            }
            for c in customers["top"]
        ],
        "unique_customers": customers["unique"],
        "repeat_customers": customers["repeat"],
    }


class OrderStats:
    def __init__(
        self, db: AsyncDatabase[Document], client: AsyncMongoClient[Document] | None = None
    ) -> None:
        self._db = db
        self._orders = db[ORDERS]
        self._client = client

    async def compute(self, filters: OrderFilters, currency: str) -> dict[str, Any]:
        """Over every order, or over one customer's: from the rollups (when a client is given
        and they are built); else one pipeline."""
        given = filters.model_dump(exclude_defaults=True)
        if self._client is not None and not given:
            stats = await global_stats(self._client, self._db, currency)
            if stats is not None:
                return stats
        if self._client is not None and set(given) == {"customer_id"}:
            stats = await customer_stats(self._client, self._db, given["customer_id"], currency)
            if stats is not None:
                return stats
        return await self.aggregate(filters, currency)

    async def aggregate(self, filters: OrderFilters, currency: str) -> dict[str, Any]:
        """The stats pipeline over the orders themselves."""
        search = None
        if filters.search is not None and await texts_ready(self._db):
            search = await search_clause(self._db, filters.search)
        cursor = await self._orders.aggregate(stats_pipeline(filters, currency, search=search))
        results = await cursor.to_list()
        return stats_view(results[0])
