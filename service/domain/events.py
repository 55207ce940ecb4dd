"""Typed events: what happened to an order, carried by the outbox to `orders.events`
(the routing key is the event's `event_type`).

Plain values; how each one reads on the wire is the adapter's business
(service/adapters/events.py renders them by their published schemas).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from orders_vocabulary.statuses import OrderStatus
from service.domain.model import HistoryEntry, Order

PLACED = "order.placed"
STATUS_CHANGED = "order.status_changed"
METADATA_UPDATED = "order.metadata_updated"
COMMAND_REJECTED = "order.command_rejected"


def _new_event_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True, kw_only=True)
class Event:
    """The envelope every event has: its id (also the AMQP message id), type and time."""

    event_type: ClassVar[str]
    occurred_at: datetime
    event_id: str = field(default_factory=_new_event_id)


@dataclass(frozen=True, kw_only=True)
class OrderPlaced(Event):
    event_type: ClassVar[str] = PLACED
    order: Order


@dataclass(frozen=True, kw_only=True)
class OrderStatusChanged(Event):
    event_type: ClassVar[str] = STATUS_CHANGED
    id: int
    order_id: int
    customer_id: str
    user_id: str | None
    from_status: OrderStatus | None
    to_status: OrderStatus
    action: str
    notes: str | None
    reason: str | None
    version: int


@dataclass(frozen=True, kw_only=True)
class OrderMetadataUpdated(Event):
    event_type: ClassVar[str] = METADATA_UPDATED
    id: int
    order_id: int
    metadata: dict[str, Any]
    version: int


@dataclass(frozen=True)
class Rejection:
    """Why a command was refused: the error of the reply it would have had."""

    code: str
    message: str
    details: Any


@dataclass(frozen=True, kw_only=True)
class OrderCommandRejected(Event):
    """A command that nobody waits a reply for was refused (`routing_key` is the command's)."""

    event_type: ClassVar[str] = COMMAND_REJECTED
    routing_key: str
    error: Rejection
    payload: Any


def order_placed(order: Order, now: datetime) -> OrderPlaced:
    return OrderPlaced(occurred_at=now, order=order)


def status_changed(order: Order, entry: HistoryEntry) -> OrderStatusChanged:
    return OrderStatusChanged(
        occurred_at=entry.at,
        id=order.id,
        order_id=order.order_id,
        customer_id=order.customer_id,
        user_id=order.user_id,
        from_status=entry.source,
        to_status=entry.target,
        action=entry.action,
        notes=entry.notes,
        reason=entry.reason,
        version=order.version,
    )


def metadata_updated(order: Order, now: datetime) -> OrderMetadataUpdated:
    return OrderMetadataUpdated(
        occurred_at=now,
        id=order.id,
        order_id=order.order_id,
        metadata=order.metadata,
        version=order.version,
    )


def command_rejected(
    routing_key: str, *, code: str, message: str, details: Any, payload: Any, now: datetime
) -> OrderCommandRejected:
    return OrderCommandRejected(
        occurred_at=now,
        routing_key=routing_key,
        error=Rejection(code, message, details),
        payload=payload,
    )
