"""The one place typed domain events become wire bodies.

Each event's shape is defined once, by its published schema (`schemas.events`): the body
has exactly the schema's fields, filled from the event's attributes of the same names, so
an event that lacks a published field fails here, not downstream. Values are rendered as
everywhere on the wire: times as UTC timestamps, statuses as strings, the order as its view.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from enum import Enum
from typing import Any

from pydantic import BaseModel

from schemas import events as wire
from service.adapters.views import order_view, timestamp
from service.domain import events
from service.domain.model import Order
from service.wire import encode

SCHEMAS: dict[type[events.Event], type[BaseModel]] = {
    events.OrderPlaced: wire.OrderPlaced,
    events.OrderStatusChanged: wire.OrderStatusChanged,
    events.OrderMetadataUpdated: wire.OrderMetadataUpdated,
    events.OrderCommandRejected: wire.OrderCommandRejected,
}
"""Each domain event and the schema that publishes it."""

ENVELOPE = ("event_id", "event_type", "occurred_at")
"""The fields every event starts with, in this order."""


def _field_names(schema: type[BaseModel]) -> tuple[str, ...]:
    own = [name for name in schema.model_fields if name not in ENVELOPE]
    return (*ENVELOPE, *own)


_FIELDS = {event: _field_names(schema) for event, schema in SCHEMAS.items()}


def event_body(event: events.Event) -> dict[str, Any]:
    """`event` as its schema publishes it, JSON-ready."""
    return {name: _value(getattr(event, name)) for name in _FIELDS[type(event)]}


def event_payload(event: events.Event) -> bytes:
    """`event`'s body as the bytes published and kept in the outbox."""
    return encode(event_body(event))


def _value(value: Any) -> Any:
    if isinstance(value, Order):
        return order_view(value)
    if isinstance(value, datetime):
        return timestamp(value)
    if isinstance(value, Enum):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _value(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value
