"""The eight order statuses: the names the wire contract and the domain share."""

from __future__ import annotations

from enum import StrEnum


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
