"""The use cases: load, let the domain decide, save, hand events to the relay.

Transport-free: the AMQP handlers (and any other entry point) call these.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from schemas.commands import OrderAction, PlaceOrder
from schemas.queries import GetOrder, ListOrders, OrderStatsQuery
from service.domain import order as domain
from service.domain.errors import ConcurrentChange, OrderNotFound
from service.domain.order import Order
from service.store.orders import DuplicateOrderNumber, DuplicatePlacement, OrderStore
from service.store.outbox import OutboxRelay
from service.store.queries import OrderQueries
from service.store.stats import OrderStats

ORDER_NUMBER_MIN = 100_000_000
ORDER_NUMBER_SPAN = 900_000_000
"""Public order numbers are random 9-digit numbers, unique by index, unrelated to `id`."""

DECISION_ATTEMPTS = 8


def utc_now() -> datetime:
    """Now in UTC, cut to milliseconds: what BSON dates keep, so replies match storage."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def draw_order_number() -> int:
    return ORDER_NUMBER_MIN + secrets.randbelow(ORDER_NUMBER_SPAN)


@dataclass(frozen=True)
class Delivery:
    """What the transport knows about a request: its message id and correlation id."""

    message_id: str | None = None
    correlation_id: str | None = None


@dataclass(frozen=True)
class Placed:
    order: Order
    replayed: bool


@dataclass(frozen=True)
class OrderPage:
    orders: list[Order]
    total: int
    last_page: int


class OrderService:
    def __init__(
        self,
        store: OrderStore,
        queries: OrderQueries,
        stats: OrderStats,
        relay: OutboxRelay,
        *,
        default_currency: str,
        clock: Callable[[], datetime] = utc_now,
        order_numbers: Callable[[], int] = draw_order_number,
    ) -> None:
        self._store = store
        self._queries = queries
        self._stats = stats
        self._relay = relay
        self._currency = default_currency
        self._clock = clock
        self._order_numbers = order_numbers

    async def place(self, command: PlaceOrder, delivery: Delivery) -> Placed:
        """Create the order once per idempotency key (else per AMQP message id)."""
        key = command.idempotency_key or _message_key(delivery)
        if key is not None and (existing := await self._store.by_idempotency_key(key)):
            await self._relay.flush(existing.id)  # a crash may have kept its event back
            return Placed(existing, replayed=True)
        id = await self._store.next_id()
        while True:
            order, event = domain.place(
                command,
                id=id,
                order_id=self._order_numbers(),
                now=self._clock(),
                default_currency=self._currency,
            )
            try:
                await self._store.insert(order, event, key, delivery.correlation_id)
            except DuplicateOrderNumber:
                continue
            except DuplicatePlacement:
                assert key is not None
                first = await self._store.by_idempotency_key(key)
                if first is None:  # pragma: no cover - unique index guarantees it
                    raise
                return Placed(first, replayed=True)
            await self._relay.flush(order.id)
            return Placed(order, replayed=False)

    async def act(self, action: OrderAction, delivery: Delivery) -> Order:
        """Apply one action with a conditional write; a lost race is decided again on a re-read."""
        request_key = action.request_id or _message_key(delivery)
        for _ in range(DECISION_ATTEMPTS):
            order = await self._load(action.id, action.order_id)
            change = domain.decide(order, action, request_key, self._clock())
            if change is None:
                if request_key in order.applied_requests:
                    await self._relay.flush(order.id)  # a crash may have kept its event back
                return order
            if await self._store.apply(change, delivery.correlation_id):
                await self._relay.flush(order.id)
                return change.after
        raise ConcurrentChange(order.version)

    async def get(self, query: GetOrder) -> Order:
        return await self._load(query.id, query.order_id)

    async def list(self, query: ListOrders) -> OrderPage:
        orders, total, last_page = await self._queries.page(query)
        return OrderPage(orders, total, last_page)

    async def stats(self, query: OrderStatsQuery) -> dict[str, Any]:
        return await self._stats.compute(query, self._currency)

    async def _load(self, id: int | None, order_id: int | None) -> Order:
        if id is not None:
            found, key, value = await self._store.by_id(id), "id", id
        else:
            assert order_id is not None
            found, key, value = await self._store.by_order_id(order_id), "order_id", order_id
        if found is None:
            raise OrderNotFound(key, value)
        return found


def _message_key(delivery: Delivery) -> str | None:
    return None if delivery.message_id is None else f"amqp-message-id:{delivery.message_id}"
