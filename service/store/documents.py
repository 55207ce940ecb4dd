"""Order documents <-> domain orders. `_id` is the sequential database id."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from orders_vocabulary.statuses import OrderStatus
from service.domain.events import Event
from service.domain.idempotency import LEGACY_MESSAGE_PREFIX, RequestKey, RequestStamp
from service.domain.model import HistoryEntry, Item, Order
from service.store.client import Document

ORDER_FIELDS = {
    "event": 0,
    "outbox": 0,
    "idempotency_key": 0,
    "message_id": 0,
    "request_fingerprint": 0,
    "search_text": 0,
    "rollup": 0,
    "rollups_pending": 0,
}
"""Projection for reading orders: the last write's event (`event`; `outbox` in orders
written before the events feed), the placing key and fingerprint, the search text and the
rollup deltas (`rollup`; `rollups_pending` in orders written before the
rollups' change feed) are internal."""

CALLER_KEY = "idempotency_key"
MESSAGE_KEY = "message_id"
FINGERPRINT = "request_fingerprint"
"""How a placed order keeps the request that placed it: the caller's `idempotency_key` or
the delivery's message id, each in a field of its own (two namespaces, each with a unique
index), and the request's fingerprint. An order placed before fingerprints were kept has
only `idempotency_key`, where a message id was written as `amqp-message-id:<id>`."""


def history_document(entry: HistoryEntry) -> Document:
    return {
        "from": None if entry.source is None else str(entry.source),
        "to": str(entry.target),
        "at": entry.at,
        "action": entry.action,
        "notes": entry.notes,
        "reason": entry.reason,
    }


EVENT = "event"


def event_entry(event: Event, correlation_id: str | None, payload: bytes) -> Document:
    """The event of a write, as the write sets it in the order's `event` field for the
    events feed to publish, with its body as it will be published (`payload`)."""
    return {
        "event_id": event.event_id,
        "routing_key": event.event_type,
        "payload": payload.decode(),
        "correlation_id": correlation_id,
        "at": event.occurred_at,
    }


def search_text(customer_id: str, billing: Mapping[str, str | None]) -> str:
    """What `search` looks in, lower-cased, one field a line (the full name on one line),
    so a search is one regular expression over one indexed field."""
    name = f"{billing.get('first_name') or ''} {billing.get('last_name') or ''}"
    fields = (customer_id, name, billing.get("email") or "", billing.get("phone") or "")
    return "\n".join(fields).lower()


def placement_fields(stamp: RequestStamp) -> Document:
    """The fields that make placing an order idempotent."""
    return {
        MESSAGE_KEY if stamp.key.from_message else CALLER_KEY: stamp.key.value,
        FINGERPRINT: stamp.fingerprint,
    }


def placement_stamp(doc: Document) -> RequestStamp | None:
    """The stamp of the request that placed `doc`; one stored before fingerprints were kept
    has none, and its key is read as it was written then (`RequestKey.legacy`)."""
    fingerprint = doc.get(FINGERPRINT)
    if isinstance(message_id := doc.get(MESSAGE_KEY), str):
        return RequestStamp(RequestKey(message_id, from_message=True), fingerprint)
    if isinstance(key := doc.get(CALLER_KEY), str):
        caller = RequestKey(key) if fingerprint is not None else RequestKey.legacy(key)
        return RequestStamp(caller, fingerprint)
    return None


def placement_query(keys: Collection[RequestKey]) -> Document:
    """The orders placed by any of `keys`, also those stored before the namespaces were
    separate. `$type` repeats the unique indexes' partial filter: without it the planner
    cannot use them and scans the collection."""
    messages = [key.value for key in keys if key.from_message]
    callers = [key.value for key in keys if not key.from_message]
    legacy = [LEGACY_MESSAGE_PREFIX + message_id for message_id in messages]
    clauses: list[Document] = [{CALLER_KEY: {"$in": callers + legacy, "$type": "string"}}]
    if messages:
        clauses.append({MESSAGE_KEY: {"$in": messages, "$type": "string"}})
    return {"$or": clauses}


def applied_document(stamp: RequestStamp, event_id: str | None = None) -> Document:
    """An applied request as the order keeps it; `event_id` tells which write pushed it."""
    doc: Document = {
        MESSAGE_KEY if stamp.key.from_message else "request_id": stamp.key.value,
        "fingerprint": stamp.fingerprint,
    }
    if event_id is not None:
        doc["event_id"] = event_id
    return doc


def applied_stamp(entry: Any) -> RequestStamp:
    """An applied request as stored: a document, or the bare key string written before
    fingerprints were kept (it replays as it did, whatever the body)."""
    if isinstance(entry, str):
        return RequestStamp(RequestKey.legacy(entry), None)
    fingerprint = entry.get("fingerprint")
    if isinstance(entry.get(MESSAGE_KEY), str):
        return RequestStamp(RequestKey(entry[MESSAGE_KEY], from_message=True), fingerprint)
    return RequestStamp(RequestKey(entry["request_id"]), fingerprint)


def order_document(order: Order) -> Document:
    return {
        "search_text": search_text(order.customer_id, order.billing),
        "_id": order.id,
        "order_id": order.order_id,
        "customer_id": order.customer_id,
        "user_id": order.user_id,
        "items": [
            {
                "product_id": item.product_id,
                "product_name": item.product_name,
                "quantity": item.quantity,
                "price": item.price,
                "metadata": item.metadata,
            }
            for item in order.items
        ],
        "billing": dict(order.billing),
        "subtotal": order.subtotal,
        "total_tax": order.total_tax,
        "total": order.total,
        "currency": order.currency,
        "status": str(order.status),
        "notes": order.notes,
        "metadata": order.metadata,
        "version": order.version,
        "status_history": [history_document(entry) for entry in order.status_history],
        "created_at": order.created_at,
        "updated_at": order.updated_at,
        "applied_requests": [applied_document(stamp) for stamp in order.applied_requests],
    }


def order_from_document(doc: Document) -> Order:
    return Order(
        id=doc["_id"],
        order_id=doc["order_id"],
        customer_id=doc["customer_id"],
        user_id=doc.get("user_id"),
        items=tuple(
            Item(
                product_id=item["product_id"],
                product_name=item["product_name"],
                quantity=item["quantity"],
                price=item["price"],
                metadata=item.get("metadata"),
            )
            for item in doc["items"]
        ),
        billing=doc["billing"],
        subtotal=doc["subtotal"],
        total_tax=doc["total_tax"],
        total=doc["total"],
        currency=doc["currency"],
        status=OrderStatus(doc["status"]),
        notes=doc.get("notes"),
        metadata=doc.get("metadata") or {},
        version=doc["version"],
        status_history=tuple(
            HistoryEntry(
                source=None if entry["from"] is None else OrderStatus(entry["from"]),
                target=OrderStatus(entry["to"]),
                at=entry["at"],
                action=entry["action"],
                notes=entry.get("notes"),
                reason=entry.get("reason"),
            )
            for entry in doc["status_history"]
        ),
        created_at=doc["created_at"],
        updated_at=doc["updated_at"],
        applied_requests=tuple(applied_stamp(entry) for entry in doc.get("applied_requests", ())),
    )
