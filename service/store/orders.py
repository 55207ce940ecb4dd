"""The orders collection: placing, conditional changes, look-ups."""

from __future__ import annotations

from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from service.domain.events import Event
from service.domain.order import REMEMBERED_REQUESTS, Change, Order
from service.store.client import COUNTERS, ORDERS, Document
from service.store.documents import (
    ORDER_FIELDS,
    history_document,
    order_document,
    order_from_document,
    outbox_entry,
)


class DuplicateOrderNumber(Exception):
    """The random public order number is taken; draw another."""


class DuplicatePlacement(Exception):
    """An order with this idempotency key exists already."""


class OrderStore:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._orders = db[ORDERS]
        self._counters = db[COUNTERS]

    async def next_id(self) -> int:
        """The next sequential database id (a counter document, atomically incremented)."""
        counter = await self._counters.find_one_and_update(
            {"_id": ORDERS},
            {"$inc": {"seq": 1}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        assert counter is not None
        return int(counter["seq"])

    async def insert(
        self, order: Order, event: Event, idempotency_key: str | None, correlation_id: str | None
    ) -> None:
        """Store a new order together with its `order.placed` event in the outbox."""
        doc = order_document(order) | {"outbox": [outbox_entry(event, correlation_id)]}
        if idempotency_key is not None:
            doc["idempotency_key"] = idempotency_key
        try:
            await self._orders.insert_one(doc)
        except DuplicateKeyError as exc:
            key_pattern: dict[str, Any] = (exc.details or {}).get("keyPattern", {})
            if "idempotency_key" in key_pattern:
                raise DuplicatePlacement from exc
            if "order_id" in key_pattern:
                raise DuplicateOrderNumber from exc
            raise

    async def by_id(self, id: int) -> Order | None:
        return await self._one({"_id": id})

    async def by_order_id(self, order_id: int) -> Order | None:
        return await self._one({"order_id": order_id})

    async def by_idempotency_key(self, key: str) -> Order | None:
        return await self._one({"idempotency_key": key})

    async def _one(self, query: Document) -> Order | None:
        doc = await self._orders.find_one(query, ORDER_FIELDS)
        return None if doc is None else order_from_document(doc)

    async def apply(self, change: Change, correlation_id: str | None) -> bool:
        """Write `change` if the order is still at the status and version it was decided on.

        One conditional `find_one_and_update`; the event goes into the outbox in the same
        write. False means somebody else changed the order first: re-read and decide again.
        """
        before, after = change.before, change.after
        push: Document = {"outbox": outbox_entry(change.event, correlation_id)}
        if change.history is not None:
            push["status_history"] = history_document(change.history)
        if change.request_key is not None:
            push["applied_requests"] = {
                "$each": [change.request_key],
                "$slice": -REMEMBERED_REQUESTS,
            }
        written = await self._orders.find_one_and_update(
            {"_id": before.id, "version": before.version, "status": str(before.status)},
            {
                "$set": {
                    "status": str(after.status),
                    "metadata": after.metadata,
                    "version": after.version,
                    "updated_at": after.updated_at,
                },
                "$push": push,
            },
            projection={"_id": 1},
        )
        return written is not None
