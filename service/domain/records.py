"""The records the use cases and their storage hand each other: what a port takes and
returns (service/application/ports.py names the operations). Plain values, no I/O; here,
below both, so the store can build them and the use cases read them without either
importing the other."""

from __future__ import annotations

from dataclasses import dataclass

from service.domain.events import Event
from service.domain.idempotency import RequestStamp
from service.domain.model import Order


class DuplicateOrderNumber(Exception):
    """The random public order number is taken; draw another."""


class DuplicatePlacement(Exception):
    """An order placed with this idempotency key (or message id) exists already."""


@dataclass(frozen=True)
class Placement:
    """A new order to store, with its event and the stamp that makes placing it idempotent."""

    order: Order
    event: Event
    stamp: RequestStamp | None
    correlation_id: str | None
    payload: bytes
    """The event's body as published (service/adapters/events.py renders it)."""


@dataclass(frozen=True)
class PlacedBefore:
    """An order found by the key that placed it, with that request's stamp."""

    order: Order
    stamp: RequestStamp


@dataclass(frozen=True)
class PendingEvent:
    """An event as the relay publishes it: its id, routing key, body and correlation id."""

    event_id: str
    routing_key: str
    payload: bytes
    correlation_id: str | None


@dataclass(frozen=True)
class Page:
    """One page of a list query: its orders, the total matching, the last page number and
    the cursor of the next page (None on the last one)."""

    orders: list[Order]
    total: int
    last_page: int
    next_cursor: str | None
