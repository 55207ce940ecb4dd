"""The orders collection: placing, conditional changes, look-ups."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, NamedTuple

from pymongo import ReturnDocument, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, WriteError

from service.batching import MicroBatcher
from service.domain.idempotency import RequestKey
from service.domain.model import Order
from service.domain.order import REMEMBERED_REQUESTS, Change
from service.domain.records import (
    DuplicateOrderNumber,
    DuplicatePlacement,
    PendingEntries,
    PlacedBefore,
    Placement,
)
from service.store.client import COUNTERS, ORDERS, Document
from service.store.documents import (
    CALLER_KEY,
    MESSAGE_KEY,
    ORDER_FIELDS,
    applied_document,
    history_document,
    order_document,
    order_from_document,
    outbox_entry,
    placement_fields,
    placement_query,
    placement_stamp,
)
from service.store.rollups.deltas import ROLLUP, change_deltas, place_deltas, rollup_field
from service.store.search import KnownTexts

DUPLICATE_KEY = 11000


class ChangeWrite(NamedTuple):
    """A change to write, with the correlation id and body its event is kept with."""

    change: Change
    correlation_id: str | None
    payload: bytes


def placement_document(placement: Placement) -> Document:
    doc = order_document(placement.order) | {
        "outbox": [outbox_entry(placement.event, placement.correlation_id, placement.payload)],
        ROLLUP: rollup_field(placement.order.version, place_deltas(placement.order)),
    }
    if placement.stamp is not None:
        doc |= placement_fields(placement.stamp)
    return doc


def _duplicate(error: dict[str, Any]) -> Exception:
    """The store's exception for one write error of a bulk insert."""
    key_pattern: dict[str, Any] = error.get("keyPattern", {})
    if error.get("code") == DUPLICATE_KEY and (
        CALLER_KEY in key_pattern or MESSAGE_KEY in key_pattern
    ):
        return DuplicatePlacement()
    if error.get("code") == DUPLICATE_KEY and "order_id" in key_pattern:
        return DuplicateOrderNumber()
    return WriteError(error.get("errmsg", "write failed"), error.get("code"), error)


LOAD_BATCH = 500
"""Most orders read by id in one `find`."""
WRITE_BATCH = 500
"""Most changes written in one `bulk_write`."""


class OrderStore:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._db = db
        self._texts = KnownTexts()
        self._orders = db[ORDERS]
        self._counters = db[COUNTERS]
        # Reads by id that arrive together (or while one runs) share one `$in` find, and
        # changes one `bulk_write`; an idle worker adds no wait. One batch of each at a time:
        # under load, what arrives while one is out goes as the next, so batches grow with
        # the load instead of the round trips (docs/benchmarks.md, "step ten").
        self._loads: MicroBatcher[int, Order | None] = MicroBatcher(
            self._by_ids, max_size=LOAD_BATCH, max_wait=0.0, max_in_flight=1
        )
        self._writes: MicroBatcher[ChangeWrite, list[Document] | None] = MicroBatcher(
            self._apply_batch, max_size=WRITE_BATCH, max_wait=0.0, max_in_flight=1
        )

    async def allocate_ids(self, count: int) -> range:
        """`count` consecutive database ids in one counter update."""
        counter = await self._counters.find_one_and_update(
            {"_id": ORDERS},
            {"$inc": {"seq": count}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        assert counter is not None  # upsert always returns a document
        last = int(counter["seq"])
        return range(last - count + 1, last + 1)

    async def insert_many(self, placements: Sequence[Placement]) -> list[Exception | None]:
        """Store new orders, each with its `order.placed` event in the outbox, in one
        unordered `insert_many`, after their search texts. Per placement: None, or the
        duplicate it ran into."""
        docs = [placement_document(p) for p in placements]
        await self._texts.remember(self._db, (doc["search_text"] for doc in docs))
        try:
            await self._orders.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            outcome: list[Exception | None] = [None] * len(docs)
            for error in exc.details.get("writeErrors", []):
                outcome[error["index"]] = _duplicate(error)
            return outcome
        return [None] * len(docs)

    async def by_idempotency_keys(
        self, keys: Collection[RequestKey]
    ) -> dict[RequestKey, PlacedBefore]:
        """The orders placed by any of `keys`, each with the stamp of the request that did."""
        found: dict[RequestKey, PlacedBefore] = {}
        async for doc in self._orders.find(placement_query(keys), {"outbox": 0}):
            stamp = placement_stamp(doc)
            if stamp is not None and stamp.key in keys:
                found[stamp.key] = PlacedBefore(order_from_document(doc), stamp)
        return found

    async def id_of(self, order_id: int) -> int | None:
        """The database id of the order with this public number."""
        doc = await self._orders.find_one({"order_id": order_id}, {"_id": 1})
        return None if doc is None else int(doc["_id"])

    async def by_id(self, id: int) -> Order | None:
        return await self._loads.submit(id)

    async def _by_ids(self, ids: Sequence[int]) -> list[Order | None]:
        found = {
            doc["_id"]: order_from_document(doc)
            async for doc in self._orders.find({"_id": {"$in": list(set(ids))}}, ORDER_FIELDS)
        }
        return [found.get(id) for id in ids]

    async def by_order_id(self, order_id: int) -> Order | None:
        return await self._one({"order_id": order_id})

    async def _one(self, query: Document) -> Order | None:
        doc = await self._orders.find_one(query, ORDER_FIELDS)
        return None if doc is None else order_from_document(doc)

    async def apply(
        self, change: Change, correlation_id: str | None, payload: bytes
    ) -> PendingEntries | None:
        """Write `change` if the order is still at the status and version it was decided on.

        A conditional write (the filter holds that status and version); the event goes into
        the outbox in the same write, as `payload` (its body as published). Returns the
        order's pending events after the write (its own and any left behind), or None:
        somebody else changed the order first, so re-read and decide again. Changes that
        arrive together share one `bulk_write` and one read of the outboxes (see
        `_apply_batch`).
        """
        if change.request is None:  # nothing to recognise it by in a batch's read-back
            return await self._apply_one(ChangeWrite(change, correlation_id, payload))
        return await self._writes.submit(ChangeWrite(change, correlation_id, payload))

    async def _apply_one(self, write: ChangeWrite) -> list[Document] | None:
        """One conditional `find_one_and_update`, which returns the outbox it left."""
        written = await self._orders.find_one_and_update(
            _change_filter(write.change),
            _change_update(write),
            projection={"outbox": 1},
            return_document=ReturnDocument.AFTER,
        )
        return None if written is None else list(written.get("outbox", []))

    async def _apply_batch(
        self, items: Sequence[ChangeWrite]
    ) -> list[list[Document] | BaseException | None]:
        """The batch's conditional writes in one unordered `bulk_write`, then one read of
        the orders: a change was written when the applied request its write pushed (marked
        with the change's event id) is in the order, and its pending events are the order's
        outbox. Its request key alone would not tell: two changes with the same key (the
        same request twice, or a redelivery) can be in one batch, and only one is written.
        A single change keeps the one round trip of `find_one_and_update`."""
        if len(items) == 1:
            return [await self._apply_one(items[0])]
        errors: dict[int, BaseException] = {}
        try:
            result = await self._orders.bulk_write(
                [UpdateOne(_change_filter(w.change), _change_update(w)) for w in items],
                ordered=False,
            )
            everything = result.matched_count == len(items)
        except BulkWriteError as exc:
            everything = False
            for error in exc.details.get("writeErrors", []):
                errors[error["index"]] = WriteError(
                    error.get("errmsg", "write failed"), error.get("code"), error
                )
        ids = list({write.change.before.id for write in items})
        orders = {
            doc["_id"]: doc
            async for doc in self._orders.find(
                {"_id": {"$in": ids}}, {"outbox": 1, "applied_requests.event_id": 1}
            )
        }
        outcome: list[list[Document] | BaseException | None] = []
        for index, (change, _, _) in enumerate(items):
            doc = orders.get(change.before.id)
            if index in errors:
                outcome.append(errors[index])
            elif doc is not None and (everything or _written(change, doc)):
                outcome.append(list(doc.get("outbox", [])))
            else:
                outcome.append(None)
        return outcome


def _written(change: Change, doc: Document) -> bool:
    """Whether the write of `change` is in `doc`: the applied request it pushed is there."""
    event_id = change.event.event_id
    return any(
        isinstance(entry, dict) and entry.get("event_id") == event_id
        for entry in doc.get("applied_requests", ())
    )


def _change_filter(change: Change) -> Document:
    before = change.before
    return {"_id": before.id, "version": before.version, "status": str(before.status)}


def _change_update(write: ChangeWrite) -> Document:
    change = write.change
    after = change.after
    push: Document = {"outbox": outbox_entry(change.event, write.correlation_id, write.payload)}
    if change.history is not None:
        push["status_history"] = history_document(change.history)
    if change.request is not None:
        applied = applied_document(change.request, change.event.event_id)
        push["applied_requests"] = {"$each": [applied], "$slice": -REMEMBERED_REQUESTS}
    return {
        "$set": {
            "status": str(after.status),
            "metadata": after.metadata,
            "version": after.version,
            "updated_at": after.updated_at,
            ROLLUP: rollup_field(after.version, change_deltas(change)),
        },
        "$push": push,
    }
