"""In-memory fakes of the use cases' ports (service/application/ports.py), for unit tests
of the use cases without mongod or RabbitMQ.

They keep the promises of the MongoDB classes they stand for: a change is written only if
the order is still at the status and version it was decided on; a placing key or a public
order number is stored once (the unique indexes), the next one gets `DuplicatePlacement` or
`DuplicateOrderNumber`; every write carries its event, and `FakeStore.written` keeps the
events of the writes in the order they were committed, as the orders' change stream does
for the events feed, which publishes them in that order. Tests read their state:
`FakeStore.orders` (each order with its placing stamp) and `FakeStore.written`.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Awaitable, Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from schemas.queries import ListOrders, OrderFilters
from service.application.usecases import OrderService
from service.domain.events import Event
from service.domain.idempotency import RequestKey, RequestStamp
from service.domain.model import Order
from service.domain.order import Change
from service.domain.records import (
    DuplicateOrderNumber,
    DuplicatePlacement,
    Page,
    PendingEvent,
    PlacedBefore,
    Placement,
)
from tests.unit.builders import NOW

Interleaved = Callable[[], Awaitable[None]]
"""What another worker does between a use case's read and its write."""


@dataclass
class StoredOrder:
    """An order as the store keeps it: its state, the request that placed it."""

    order: Order
    placed_by: RequestStamp | None = None


def _pending(event: Event, correlation_id: str | None, payload: bytes) -> PendingEvent:
    return PendingEvent(event.event_id, event.event_type, payload, correlation_id)


class FakeStore:
    """The orders in a dict, by database id."""

    def __init__(self) -> None:
        self.orders: dict[int, StoredOrder] = {}
        self.written: list[PendingEvent] = []
        """The events of the writes, in the order they were committed."""
        self.reads = 0
        """How many orders were read by id or number: a decision taken on the order the
        use case remembers reads none."""
        self.before_writes: list[Interleaved] = []
        """Run, one each, before the next conditional writes: another worker's change
        landing between this one's read and its write."""
        self.before_inserts: list[Interleaved] = []
        """Run, one each, before the next inserts."""
        self._last_id = 0
        self._interleaving = False

    async def _interleave(self, waiting: list[Interleaved]) -> None:
        """Run the next of `waiting`, if any (its own writes run none)."""
        if waiting and not self._interleaving:
            self._interleaving = True
            try:
                await waiting.pop(0)()
            finally:
                self._interleaving = False

    async def by_id(self, id: int) -> Order | None:
        self.reads += 1
        stored = self.orders.get(id)
        return None if stored is None else stored.order

    async def load(self, id: int) -> Order | None:
        return await self.by_id(id)

    async def by_order_id(self, order_id: int) -> Order | None:
        self.reads += 1
        return next((s.order for s in self.orders.values() if s.order.order_id == order_id), None)

    async def apply(self, change: Change, correlation_id: str | None, payload: bytes) -> bool:
        await self._interleave(self.before_writes)
        before = change.before
        stored = self.orders.get(before.id)
        if (
            stored is None
            or stored.order.status != before.status
            or stored.order.version != before.version
        ):
            return False  # somebody else changed it first
        stored.order = change.after
        self.written.append(_pending(change.event, correlation_id, payload))
        return True

    async def allocate_ids(self, count: int) -> range:
        first = self._last_id + 1
        self._last_id += count
        return range(first, self._last_id + 1)

    async def insert_many(self, placements: Sequence[Placement]) -> list[Exception | None]:
        await self._interleave(self.before_inserts)
        return [self._insert(placement) for placement in placements]

    def _insert(self, placement: Placement) -> Exception | None:
        order, stamp = placement.order, placement.stamp
        if order.id in self.orders:
            return RuntimeError(f"duplicate database id {order.id}")
        if stamp is not None and any(
            s.placed_by is not None and s.placed_by.key == stamp.key for s in self.orders.values()
        ):
            return DuplicatePlacement()
        if any(s.order.order_id == order.order_id for s in self.orders.values()):
            return DuplicateOrderNumber()
        self.orders[order.id] = StoredOrder(order, stamp)
        self.written.append(_pending(placement.event, placement.correlation_id, placement.payload))
        return None

    async def by_idempotency_keys(
        self, keys: Collection[RequestKey]
    ) -> dict[RequestKey, PlacedBefore]:
        return {
            s.placed_by.key: PlacedBefore(s.order, s.placed_by)
            for s in self.orders.values()
            if s.placed_by is not None and s.placed_by.key in keys
        }


class FakeQueries:
    """The list query over the fake's orders, for what it models: filters by customer and
    status, newest first (the default sort), numbered pages. It refuses what it does not
    model (other filters, sorts, cursors) rather than answer wrongly."""

    MODELLED = frozenset({"customer_id", "status", "page", "per_page"})

    def __init__(self, store: FakeStore) -> None:
        self._store = store

    async def page(self, query: ListOrders) -> Page:
        unmodelled = set(query.model_dump(exclude_defaults=True)) - self.MODELLED
        if unmodelled:
            raise NotImplementedError(f"the fake list query does not model {sorted(unmodelled)}")
        orders = [
            s.order
            for s in self._store.orders.values()
            if (query.customer_id is None or s.order.customer_id == query.customer_id)
            and (not query.status or s.order.status in query.status)
        ]
        orders.sort(key=lambda order: (order.created_at, order.id), reverse=True)
        start = (query.page - 1) * query.per_page
        last_page = max(1, math.ceil(len(orders) / query.per_page))
        return Page(orders[start : start + query.per_page], len(orders), last_page, None)


class FakeStats:
    """Statistics are MongoDB pipelines and rollups (tests/integration covers them); the
    fake refuses rather than invent numbers."""

    async def compute(self, filters: OrderFilters, currency: str) -> dict[str, Any]:
        raise NotImplementedError("the fakes do not compute statistics")


@dataclass
class World:
    """A store shared by any number of workers (each an `OrderService` with its own memory
    of recent orders), as several worker processes share MongoDB."""

    store: FakeStore = field(default_factory=FakeStore)
    order_numbers: Iterator[int] = field(default_factory=lambda: itertools.count(100_000_001))
    """The public order numbers the workers draw (by default all different)."""

    def worker(
        self, *, order_numbers: Callable[[], int] | None = None, batch_wait: float = 0.02
    ) -> OrderService:
        """A worker on this world, its clock at NOW; placing waits `batch_wait` seconds to
        gather a batch (requests submitted together share one)."""
        numbers = order_numbers or self.order_numbers.__next__
        return OrderService(
            self.store,
            FakeQueries(self.store),
            FakeStats(),
            default_currency="EUR",
            clock=lambda: NOW,
            order_numbers=numbers,
            batch_wait=batch_wait,
        )

    def routing_keys(self) -> list[str]:
        return [event.routing_key for event in self.store.written]

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(event.payload) for event in self.store.written]


class DeliveryChannel:
    """The channel deliveries came on, as the worker's acks use it (service/worker/acks.py):
    `acked` lists the message ids acked, in the order their frames went (a multiple ack:
    every delivery up to its tag not acked yet, in tag order)."""

    is_closed = False

    def __init__(self) -> None:
        self.deliveries: dict[int, str] = {}
        self.acked: list[str] = []

    async def ready(self) -> None:
        return None

    async def basic_ack(self, delivery_tag: int, multiple: bool = False, wait: bool = True) -> None:
        tags = (
            [t for t in sorted(self.deliveries) if t <= delivery_tag]
            if multiple
            else [delivery_tag]
        )
        self.acked.extend(self.deliveries.pop(tag) for tag in tags)


def incoming(message_id: str, channel: Any, **fields: Any) -> Any:
    """A raw delivery as aio-pika hands it over (the properties the action router and the
    courier read), on `channel`; `fields` add to or replace them (`body`, `delivery_tag`).
    On a `DeliveryChannel`, with a `delivery_tag`, its ack is recorded there."""
    if isinstance(channel, DeliveryChannel) and "delivery_tag" in fields:
        channel.deliveries[fields["delivery_tag"]] = message_id
    return SimpleNamespace(
        **{
            "body": b"{}",
            "headers": {},
            "content_type": "application/json",
            "content_encoding": None,
            "priority": None,
            "correlation_id": "c",
            "reply_to": None,
            "expiration": None,
            "message_id": message_id,
            "timestamp": None,
            "type": None,
            "app_id": None,
            "channel": channel,
            "lock": lambda: None,
            **fields,
        }
    )
