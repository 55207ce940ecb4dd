"""What the domain is asked to do: plain values, already validated by the wire contract.

The application layer maps each wire command (`schemas.commands`) to one of these, so the
domain knows nothing of pydantic or of how a request arrived.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar, Literal

from orders_vocabulary.statuses import OrderStatus
from service.domain.model import Item


@dataclass(frozen=True)
class PlaceOrder:
    customer_id: str
    user_id: str | None
    items: tuple[Item, ...]
    billing: Mapping[str, str | None]
    total: Decimal | None
    total_tax: Decimal | None
    status: OrderStatus
    notes: str | None
    metadata: Mapping[str, Any]
    currency: str | None


@dataclass(frozen=True, kw_only=True)
class Action:
    """Which order an action is for (`id` or `order_id`) and the version it expects."""

    action: ClassVar[str]
    id: int | None = None
    order_id: int | None = None
    expected_version: int | None = None


@dataclass(frozen=True, kw_only=True)
class UpdateStatus(Action):
    action: ClassVar[str] = "update_status"
    status: OrderStatus
    notes: str | None = None


@dataclass(frozen=True, kw_only=True)
class CancelOrder(Action):
    action: ClassVar[str] = "cancel"
    reason: str | None = None
    notes: str | None = None


@dataclass(frozen=True, kw_only=True)
class CompleteOrder(Action):
    action: ClassVar[str] = "complete"
    notes: str | None = None


@dataclass(frozen=True, kw_only=True)
class UpdateMetadata(Action):
    action: ClassVar[str] = "update_metadata"
    metadata: Mapping[str, Any] = field(default_factory=dict)
    mode: Literal["merge", "replace"] = "merge"


OrderAction = UpdateStatus | CancelOrder | CompleteOrder | UpdateMetadata
