"""The Mongo client (exact decimals, UTC datetimes) and the indexes the queries rely on."""

from __future__ import annotations

from datetime import UTC
from decimal import Decimal
from typing import Any

from bson.codec_options import CodecOptions, TypeCodec, TypeRegistry
from bson.decimal128 import Decimal128
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, IndexModel
from pymongo.asynchronous.database import AsyncDatabase

Document = dict[str, Any]


DECODED_CACHE_SIZE = 10_000


class DecimalCodec(TypeCodec):
    """`Decimal` <-> `Decimal128`, so money never meets a float."""

    python_type = Decimal
    bson_type = Decimal128

    def __init__(self) -> None:
        self._decoded: dict[bytes, Decimal] = {}

    def transform_python(self, value: Decimal) -> Decimal128:
        return Decimal128(value)

    def transform_bson(self, value: Decimal128) -> Decimal:
        # Decimal128.to_decimal is pure Python and the hottest part of reading an order;
        # prices and totals repeat, and a Decimal is immutable, so decoded values are kept.
        bid = value.bid
        decoded = self._decoded.get(bid)
        if decoded is None:
            if len(self._decoded) >= DECODED_CACHE_SIZE:
                self._decoded.clear()
            decoded = self._decoded[bid] = value.to_decimal()
        return decoded


CODEC_OPTIONS: CodecOptions[Document] = CodecOptions(
    document_class=dict,
    tz_aware=True,
    tzinfo=UTC,
    type_registry=TypeRegistry([DecimalCodec()]),
)

ORDERS = "orders"

CREATED_DAY: Document = {
    "$dateToString": {"format": "%Y-%m-%d", "date": "$created_at", "timezone": "UTC"}
}
"""The UTC day an order was created (`2026-12-06`), as the stats and their rollups key days."""
COUNTERS = "counters"
SEARCH_TEXTS = "search_texts"

STATS_FIELDS = ("customer_id", "status", "currency", "total", "created_at")
"""What the stats pipeline reads of an order."""

ORDER_INDEXES = [
    IndexModel([("order_id", ASCENDING)], name="order_id_unique", unique=True),
    IndexModel(
        [("idempotency_key", ASCENDING)],
        name="idempotency_key_unique",
        unique=True,
        partialFilterExpression={"idempotency_key": {"$type": "string"}},
    ),
    # The message id that placed an order without a key of its own: a namespace apart.
    IndexModel(
        [("message_id", ASCENDING)],
        name="message_id_unique",
        unique=True,
        partialFilterExpression={"message_id": {"$type": "string"}},
    ),
    # Each list index ends in `_id`, the sort's tie-breaker, so a page is read off the index
    # in order instead of sorting every match.
    # ... and carries what stats need, so stats by customer read the index alone.
    IndexModel(
        [
            ("customer_id", ASCENDING),
            ("created_at", DESCENDING),
            ("_id", DESCENDING),
            ("status", ASCENDING),
            ("currency", ASCENDING),
            ("total", ASCENDING),
        ],
        name="customer_created_id_stats",
    ),
    IndexModel(
        [("status", ASCENDING), ("created_at", DESCENDING), ("_id", DESCENDING)],
        name="status_created_id",
    ),
    IndexModel(
        [("user_id", ASCENDING), ("created_at", DESCENDING), ("_id", DESCENDING)],
        name="user_created_id",
    ),
    IndexModel([("created_at", DESCENDING), ("_id", DESCENDING)], name="created_id"),
    IndexModel([("updated_at", DESCENDING), ("_id", DESCENDING)], name="updated_id"),
    IndexModel([("total", DESCENDING), ("_id", DESCENDING)], name="total_id"),
    IndexModel([("search_text", ASCENDING)], name="search_text"),
    IndexModel(
        [("outbox.at", ASCENDING)],
        name="outbox_pending",
        partialFilterExpression={"outbox.0": {"$exists": True}},
    ),
]
"""Each index and the query it serves: order_id lookups; idempotent placing; list and stats
by customer, by status, by user and by date; search (the orders of the matching texts, see
`service.store.search`, or a regular expression over the index keys of `search_text`); the
events an earlier version left in `outbox` arrays (`outbox.publish_left_behind`)."""


def connect(url: str, *, timeout_ms: int = 5000) -> AsyncMongoClient[Document]:
    """A client with majority writes; nothing is sent until the first operation."""
    return AsyncMongoClient(
        url,
        document_class=dict,
        tz_aware=True,
        tzinfo=UTC,
        type_registry=TypeRegistry([DecimalCodec()]),
        w="majority",
        retryWrites=True,
        serverSelectionTimeoutMS=timeout_ms,
        appname="orders-service",
    )


def database(client: AsyncMongoClient[Document], name: str) -> AsyncDatabase[Document]:
    return client.get_database(name, codec_options=CODEC_OPTIONS)


SUPERSEDED_INDEXES = ("customer_created_id",)
"""Indexes of earlier versions that an index above replaces; dropped once it exists."""


async def ensure_indexes(db: AsyncDatabase[Document]) -> None:
    await db[ORDERS].create_indexes(ORDER_INDEXES)
    existing = {index["name"] async for index in await db[ORDERS].list_indexes()}
    for name in SUPERSEDED_INDEXES:
        if name in existing:
            await db[ORDERS].drop_index(name)
