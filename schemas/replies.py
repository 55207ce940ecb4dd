"""The reply envelope of every request that carries `reply_to`."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.orders import OrderView


class Envelope(BaseModel):
    model_config = ConfigDict(frozen=True)


class Reply(Envelope):
    """Success: `data` is an order, a list of statuses or stats."""

    success: Literal[True] = True
    message: str | None = Field(default=None, examples=["Order placed successfully"])
    data: Any


class Pagination(Envelope):
    current_page: int
    per_page: int
    total: int
    last_page: int = Field(ge=1)


class ListReply(Envelope):
    success: Literal[True] = True
    data: list[OrderView]
    pagination: Pagination


class ErrorBody(Envelope):
    code: Literal[
        "bad_request",
        "validation_error",
        "not_found",
        "invalid_transition",
        "version_conflict",
        "unknown_action",
        "internal_error",
    ]
    details: Any = None


class ErrorReply(Envelope):
    success: Literal[False] = False
    message: str
    error: ErrorBody


class CustomerRevenue(Envelope):
    customer_id: str
    orders: int
    revenue: Decimal


class DayRevenue(Envelope):
    date: str
    orders: int
    revenue: Decimal


class StatsView(Envelope):
    """`data` of an `orders.stats` reply; amounts are JSON numbers with two decimals."""

    total_orders: int
    total_revenue: Decimal
    average_order_value: Decimal
    active_orders: int
    pending_orders: int
    processing_orders: int
    confirmed_orders: int
    in_progress_orders: int
    completed_orders: int
    cancelled_orders: int
    refunded_orders: int
    on_hold_orders: int
    status_breakdown: dict[str, int]
    revenue_by_currency: dict[str, Decimal]
    revenue_by_day: list[DayRevenue]
    top_customers: list[CustomerRevenue]
    unique_customers: int
    repeat_customers: int
