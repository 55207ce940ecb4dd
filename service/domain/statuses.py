"""The eight order statuses and the transition table, as data."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType


class OrderStatus(StrEnum):
    """Order statuses, in the order `orders.statuses` returns them."""

    PENDING = "pending"
    PROCESSING = "processing"
    CONFIRMED = "confirmed"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    REFUNDED = "refunded"
    ON_HOLD = "on_hold"


S = OrderStatus

TRANSITIONS: Mapping[OrderStatus, tuple[OrderStatus, ...]] = MappingProxyType(
    {
        S.PENDING: (S.PROCESSING, S.CONFIRMED, S.IN_PROGRESS, S.ON_HOLD, S.CANCELLED),
        S.PROCESSING: (S.CONFIRMED, S.IN_PROGRESS, S.COMPLETED, S.ON_HOLD, S.CANCELLED),
        S.CONFIRMED: (S.PROCESSING, S.IN_PROGRESS, S.COMPLETED, S.ON_HOLD, S.CANCELLED),
        S.IN_PROGRESS: (S.COMPLETED, S.ON_HOLD, S.CANCELLED),
        S.ON_HOLD: (S.PENDING, S.PROCESSING, S.CONFIRMED, S.IN_PROGRESS, S.CANCELLED),
        S.COMPLETED: (S.REFUNDED,),
        S.CANCELLED: (),
        S.REFUNDED: (),
    }
)
"""From each status, the statuses an order may move to next."""

CLOSED: frozenset[OrderStatus] = frozenset({S.COMPLETED, S.CANCELLED, S.REFUNDED})
"""Statuses that `active_only` excludes."""

NO_REVENUE: frozenset[OrderStatus] = frozenset({S.CANCELLED, S.REFUNDED})
"""Statuses whose orders do not count towards revenue."""


def can_move(source: OrderStatus, target: OrderStatus) -> bool:
    """Whether the table allows `source -> target`."""
    return target in TRANSITIONS[source]
