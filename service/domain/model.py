"""The order as the domain holds it: plain frozen values, no behaviour beyond reading."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from orders_vocabulary.money import CURRENCY_SYMBOLS
from orders_vocabulary.statuses import OrderStatus
from service.domain.idempotency import RequestKey, RequestStamp, find


@dataclass(frozen=True)
class Item:
    product_id: int | str
    product_name: str
    quantity: int
    price: Decimal
    metadata: dict[str, Any] | None = None

    @property
    def amount(self) -> Decimal:
        return self.price * self.quantity


@dataclass(frozen=True)
class HistoryEntry:
    source: OrderStatus | None
    target: OrderStatus
    at: datetime
    action: str
    notes: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Order:
    id: int
    order_id: int
    customer_id: str
    user_id: str | None
    items: tuple[Item, ...]
    billing: Mapping[str, str | None]
    subtotal: Decimal
    total_tax: Decimal
    total: Decimal
    currency: str
    status: OrderStatus
    notes: str | None
    metadata: dict[str, Any]
    version: int
    status_history: tuple[HistoryEntry, ...]
    created_at: datetime
    updated_at: datetime
    applied_requests: tuple[RequestStamp, ...] = field(default=(), repr=False)

    @property
    def currency_symbol(self) -> str:
        return CURRENCY_SYMBOLS.get(self.currency, self.currency)

    def applied(self, key: RequestKey) -> RequestStamp | None:
        """The applied request of this key, if the order remembers one."""
        return find(self.applied_requests, key)
