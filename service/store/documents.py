"""Order documents <-> domain orders. `_id` is the sequential database id."""

from __future__ import annotations

from collections.abc import Mapping

from service.domain.events import Event
from service.domain.order import HistoryEntry, Item, Order
from service.domain.statuses import OrderStatus
from service.store.client import Document
from service.wire import encode

ORDER_FIELDS = {"outbox": 0, "idempotency_key": 0, "search_text": 0, "rollups_pending": 0}
"""Projection for reading orders: the outbox, the placing key, the search text and the
pending rollup deltas are internal."""


def history_document(entry: HistoryEntry) -> Document:
    return {
        "from": None if entry.source is None else str(entry.source),
        "to": str(entry.target),
        "at": entry.at,
        "action": entry.action,
        "notes": entry.notes,
        "reason": entry.reason,
    }


def outbox_entry(event: Event, correlation_id: str | None) -> Document:
    """An event waiting in its order's document until the relay has published it."""
    return {
        "event_id": event.event_id,
        "routing_key": event.routing_key,
        "payload": encode(event.body).decode(),
        "correlation_id": correlation_id,
        "at": event.occurred_at,
    }


def search_text(customer_id: str, billing: Mapping[str, str | None]) -> str:
    """What `search` looks in, lower-cased, one field a line (the full name on one line),
    so a search is one regular expression over one indexed field."""
    name = f"{billing.get('first_name') or ''} {billing.get('last_name') or ''}"
    fields = (customer_id, name, billing.get("email") or "", billing.get("phone") or "")
    return "\n".join(fields).lower()


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
        "applied_requests": list(order.applied_requests),
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
        applied_requests=tuple(doc.get("applied_requests", ())),
    )
