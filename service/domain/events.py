"""Event bodies, built by the domain and carried by the outbox to `orders.events`."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from service.domain.views import order_view, timestamp

if TYPE_CHECKING:
    from service.domain.order import HistoryEntry, Order

PLACED = "order.placed"
STATUS_CHANGED = "order.status_changed"
METADATA_UPDATED = "order.metadata_updated"
COMMAND_REJECTED = "order.command_rejected"


@dataclass(frozen=True)
class Event:
    event_id: str
    routing_key: str
    occurred_at: datetime
    body: dict[str, Any]


def _event(event_type: str, now: datetime, **fields: Any) -> Event:
    event_id = str(uuid.uuid4())
    body = {"event_id": event_id, "event_type": event_type, "occurred_at": timestamp(now)}
    return Event(event_id, event_type, now, body | fields)


def order_placed(order: Order, now: datetime) -> Event:
    return _event(PLACED, now, order=order_view(order))


def status_changed(order: Order, entry: HistoryEntry) -> Event:
    return _event(
        STATUS_CHANGED,
        entry.at,
        id=order.id,
        order_id=order.order_id,
        customer_id=order.customer_id,
        user_id=order.user_id,
        from_status=None if entry.source is None else str(entry.source),
        to_status=str(entry.target),
        action=entry.action,
        notes=entry.notes,
        reason=entry.reason,
        version=order.version,
    )


def metadata_updated(order: Order, now: datetime) -> Event:
    return _event(
        METADATA_UPDATED,
        now,
        id=order.id,
        order_id=order.order_id,
        metadata=order.metadata,
        version=order.version,
    )


def command_rejected(
    routing_key: str, *, code: str, message: str, details: Any, payload: Any, now: datetime
) -> Event:
    return _event(
        COMMAND_REJECTED,
        now,
        routing_key=routing_key,
        error={"code": code, "message": message, "details": details},
        payload=payload,
    )
