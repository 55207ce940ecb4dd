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
    PlacedBefore,
    Placement,
)
from service.store.client import COUNTERS, ORDERS, Document
from service.store.documents import (
    CALLER_KEY,
    EVENT,
    MESSAGE_KEY,
    ORDER_FIELDS,
    applied_document,
    event_entry,
    history_document,
    order_document,
    order_from_document,
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
        EVENT: event_entry(placement.event, placement.correlation_id, placement.payload),
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


PLACED_FIELDS = {EVENT: 0, "outbox": 0, "rollup": 0}
"""An order with the stamp of the request that placed it (`placement_stamp`)."""
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
        # Actions' reads by id that arrive together (or while one runs) share one `$in`
        # find, and changes one `bulk_write`; an idle worker adds no wait. One batch of each
        # at a time: under load, what arrives while one is out goes as the next, so batches
        # grow with the load instead of the round trips (docs/benchmarks.md, "step ten").
        # A get reads alone (`by_id`): it would wait for the batch in flight.
        self._loads: MicroBatcher[int, Order | None] = MicroBatcher(
            self._by_ids, max_size=LOAD_BATCH, max_wait=0.0, max_in_flight=1
        )
        self._writes: MicroBatcher[ChangeWrite, bool] = MicroBatcher(
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
        """Store new orders, each with its `order.placed` event (for the events feed), in one
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
        async for doc in self._orders.find(placement_query(keys), PLACED_FIELDS):
            stamp = placement_stamp(doc)
            if stamp is not None and stamp.key in keys:
                found[stamp.key] = PlacedBefore(order_from_document(doc), stamp)
        return found

    async def id_of(self, order_id: int) -> int | None:
        """The database id of the order with this public number."""
        doc = await self._orders.find_one({"order_id": order_id}, {"_id": 1})
        return None if doc is None else int(doc["_id"])

    async def by_id(self, id: int) -> Order | None:
        return await self._one({"_id": id})

    async def load(self, id: int) -> Order | None:
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

    async def apply(self, change: Change, correlation_id: str | None, payload: bytes) -> bool:
        """Write `change` if the order is still at the status and version it was decided on.

        A conditional write (the filter holds that status and version); the event goes into
        the order in the same write, as `payload` (its body as published), for the events
        feed. Whether it was written; if not, somebody else changed the order first, so
        re-read and decide again. Changes that arrive together share one `bulk_write` (see
        `_apply_batch`).
        """
        if change.request is None:  # nothing to recognise it by in a batch's read-back
            return await self._apply_one(ChangeWrite(change, correlation_id, payload))
        return await self._writes.submit(ChangeWrite(change, correlation_id, payload))

    async def _apply_one(self, write: ChangeWrite) -> bool:
        """One conditional update."""
        written = await self._orders.update_one(_change_filter(write.change), _change_update(write))
        return bool(written.matched_count)

    async def _apply_batch(self, items: Sequence[ChangeWrite]) -> list[bool | BaseException]:
        """The batch's conditional writes in one unordered `bulk_write`. When some were not
        written, one read of the orders tells which were: a change was written when the
        applied request its write pushed (marked with the change's event id) is in the
        order. Its request key alone would not tell: two changes with the same key (the
        same request twice, or a redelivery) can be in one batch, and only one is written."""
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
        if everything:
            return [True] * len(items)
        ids = list({write.change.before.id for write in items})
        orders = {
            doc["_id"]: doc
            async for doc in self._orders.find(
                {"_id": {"$in": ids}}, {"applied_requests.event_id": 1}
            )
        }
        outcome: list[bool | BaseException] = []
        for index, (change, _, _) in enumerate(items):
            doc = orders.get(change.before.id)
            if index in errors:
                outcome.append(errors[index])
            else:
                outcome.append(doc is not None and _written(change, doc))
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
    push: Document = {}
    if change.history is not None:
        push["status_history"] = history_document(change.history)
    if change.request is not None:
        applied = applied_document(change.request, change.event.event_id)
        push["applied_requests"] = {"$each": [applied], "$slice": -REMEMBERED_REQUESTS}
    update: Document = {
        "$set": {
            "status": str(after.status),
            "metadata": after.metadata,
            "version": after.version,
            "updated_at": after.updated_at,
            ROLLUP: rollup_field(after.version, change_deltas(change)),
            EVENT: event_entry(change.event, write.correlation_id, write.payload),
        }
    }
    if push:
        update["$push"] = push
    return update
