"""The transition table and the status groups the domain and the store rely on, as data."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from orders_vocabulary.statuses import OrderStatus

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
