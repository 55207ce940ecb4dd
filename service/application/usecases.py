"""The use cases: load, let the domain decide, save (each write with its event, which the
events feed publishes: service/store/outbox.py).

Transport-free: the worker's consumers and the HTTP gateway both call these.
"""

from __future__ import annotations

import secrets
import sys
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Any

from schemas.commands import OrderAction, PlaceOrder
from schemas.queries import GetOrder, ListOrders, OrderStatsQuery
from service.adapters.events import event_payload
from service.application.clock import utc_now
from service.application.commands import order_action
from service.application.delivery import Delivery
from service.application.idempotency import action_stamp
from service.application.placing import Placed, Placer
from service.application.ports import QueriesPort, StatsPort, StorePort
from service.domain import order as domain
from service.domain.errors import (
    ConcurrentChange,
    IdempotencyConflict,
    InvalidTransition,
    OrderNotFound,
    VersionConflict,
)
from service.domain.model import HistoryEntry, Item, Order
from service.domain.records import Page

ORDER_NUMBER_MIN = 100_000_000
ORDER_NUMBER_SPAN = 900_000_000
"""Public order numbers are random 9-digit numbers, unique by index, unrelated to `id`."""

DECISION_ATTEMPTS = 8


def draw_order_number() -> int:
    return ORDER_NUMBER_MIN + secrets.randbelow(ORDER_NUMBER_SPAN)


class RecentOrders:
    """The orders this worker last wrote, by id and by order number: LRU, bounded by count
    and by an estimate of the bytes they hold.

    An order is only a shortcut for the next action's first decision (a miss reads it from
    MongoDB), so an order estimated above `max_order_bytes` (large metadata, a long
    history) is not kept at all, and the least recently written ones go once the estimates
    add up to more than `max_bytes`. The estimate walks the order's objects and stops as
    soon as it passes `max_order_bytes`, so remembering costs a bounded amount of work.
    """

    def __init__(
        self,
        size: int = 10_000,
        *,
        max_bytes: int = 48 * 1024 * 1024,
        max_order_bytes: int = 64 * 1024,
    ) -> None:
        self._size = size
        self._max_bytes = max_bytes
        self._max_order_bytes = max_order_bytes
        self._orders: OrderedDict[int, tuple[Order, int]] = OrderedDict()
        self._ids: dict[int, int] = {}
        self.bytes = 0
        """The sum of the estimates of the orders kept: at most `max_bytes`."""

    def __len__(self) -> int:
        return len(self._orders)

    def remember(self, order: Order) -> None:
        self.forget(order.id)
        weight = footprint(order, self._max_order_bytes)
        if weight > self._max_order_bytes:
            return  # too large to be worth keeping: the next action reads it
        self._orders[order.id] = (order, weight)
        self._ids[order.order_id] = order.id
        self.bytes += weight
        while len(self._orders) > self._size or self.bytes > self._max_bytes:
            _, (old, old_weight) = self._orders.popitem(last=False)
            self._ids.pop(old.order_id, None)
            self.bytes -= old_weight

    def forget(self, id: int) -> None:
        kept = self._orders.pop(id, None)
        if kept is not None:
            self._ids.pop(kept[0].order_id, None)
            self.bytes -= kept[1]

    def get(self, id: int | None, order_id: int | None) -> Order | None:
        key = id if id is not None else self._ids.get(order_id or 0)
        kept = None if key is None else self._orders.get(key)
        return None if kept is None else kept[0]


def footprint(order: Order, limit: int) -> int:
    """An estimate of the bytes `order` holds (`sys.getsizeof` of every object reached:
    shared objects count each time), or a number above `limit` once it passes it."""
    total = sys.getsizeof(order) + sys.getsizeof(vars(order))
    stack: list[Any] = list(vars(order).values())
    while stack:
        value = stack.pop()
        total += sys.getsizeof(value)
        if total > limit:
            return total
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list | tuple):
            stack.extend(value)
        elif isinstance(value, Item | HistoryEntry):
            total += sys.getsizeof(vars(value))
            stack.extend(vars(value).values())
    return total


class OrderService:
    def __init__(
        self,
        store: StorePort,
        queries: QueriesPort,
        stats: StatsPort,
        *,
        default_currency: str,
        clock: Callable[[], datetime] = utc_now,
        order_numbers: Callable[[], int] = draw_order_number,
        batch_size: int = 200,
        batch_wait: float = 0.002,
    ) -> None:
        self._store = store
        self._queries = queries
        self._stats = stats
        self._currency = default_currency
        self._clock = clock
        self._recent = RecentOrders()
        self._placer = Placer(
            store,
            default_currency=default_currency,
            clock=clock,
            order_numbers=order_numbers,
            batch_size=batch_size,
            batch_wait=batch_wait,
        )

    async def place(self, command: PlaceOrder, delivery: Delivery) -> Placed:
        """Create the order once per idempotency key (else per AMQP message id)."""
        placed = await self._placer.place(command, delivery)
        self._recent.remember(placed.order)
        return placed

    async def act(self, action: OrderAction, delivery: Delivery) -> Order:
        """Apply one action with a conditional write; a lost race is decided again on a re-read.

        The first decision may be taken on the order as this worker last wrote it (it holds
        the action queue, so that is usually current); anything but a successful write —
        a refusal, a no-op, a missed write — is decided again on a fresh read. So what it
        returns is always a state that was stored: its own write, or a fresh read (a write
        that lost to the same request in the same batch replays on the winner's).
        """
        request = action_stamp(action, delivery.message_id)
        command = order_action(action)
        order = self._recent.get(action.id, action.order_id)
        from_cache = order is not None
        version = 0
        for _ in range(DECISION_ATTEMPTS):
            if order is None:
                order = await self._load(action.id, action.order_id, batched=True)
                from_cache = False
            version = order.version
            try:
                change = domain.decide(order, command, request, self._clock())
            except (VersionConflict, InvalidTransition, IdempotencyConflict):
                if not from_cache:
                    raise
                order = None
                continue
            if change is None:
                if from_cache:  # confirm a no-op on a fresh read
                    order = None
                    continue
                return order
            if await self._store.apply(
                change, delivery.correlation_id, event_payload(change.event)
            ):
                self._recent.remember(change.after)
                return change.after
            order = None  # lost a race, or the remembered order was stale: read it again
        raise ConcurrentChange(version)

    async def get(self, query: GetOrder) -> Order:
        return await self._load(query.id, query.order_id)

    async def list(self, query: ListOrders) -> Page:
        return await self._queries.page(query)

    async def stats(self, query: OrderStatsQuery) -> dict[str, Any]:
        return await self._stats.compute(query, self._currency)

    async def _load(self, id: int | None, order_id: int | None, *, batched: bool = False) -> Order:
        """The order by id or else order_id; `batched`: read with others (`StorePort.load`)."""
        if id is not None:
            read = self._store.load if batched else self._store.by_id
            found, key, value = await read(id), "id", id
        else:
            assert order_id is not None
            found, key, value = await self._store.by_order_id(order_id), "order_id", order_id
        if found is None:
            raise OrderNotFound(key, value)
        return found
