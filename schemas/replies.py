"""The reply envelope of every request that carries `reply_to`."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from orders_vocabulary.statuses import OrderStatus
from schemas.orders import ORDER_EXAMPLE, OrderView

_ORDERS = "Orders counted."
_REVENUE = "Revenue in the default currency, two decimals."

Amount = Annotated[Decimal, WithJsonSchema({"type": "number"})]
"""An exact amount written as a JSON number with two decimals (never through a float)."""


class Envelope(BaseModel):
    model_config = ConfigDict(frozen=True)


class Reply(Envelope):
    """Success: `data` is an order, a list of statuses or stats."""

    success: Literal[True] = Field(default=True, description="Always true.", examples=[True])
    message: str | None = Field(
        default=None,
        description="Commands only: what happened.",
        examples=["Order placed successfully"],
    )
    data: Any = Field(
        description="orders.place, orders.action, orders.get: the order (null for a command "
        "without reply_to); orders.stats: StatsView; orders.statuses: the eight statuses.",
        examples=[ORDER_EXAMPLE],
    )


class OrderReply(Envelope):
    """The reply that carries one order: place, action and get."""

    success: Literal[True] = Field(default=True, description="Always true.", examples=[True])
    message: str | None = Field(
        default=None,
        description="Commands only: what happened.",
        examples=["Order placed successfully"],
    )
    data: OrderView = Field(description="The order.", examples=[ORDER_EXAMPLE])


class StatusesReply(Envelope):
    """The reply to `orders.statuses`: the eight statuses, in order."""

    success: Literal[True] = Field(default=True, description="Always true.", examples=[True])
    data: list[OrderStatus] = Field(
        description="The eight statuses, in order.", examples=[[str(s) for s in OrderStatus]]
    )


class Pagination(Envelope):
    """Where a page of `orders.list` is."""

    current_page: int | None = Field(
        description="The page; null in cursor mode (`cursor` given).", examples=[1]
    )
    per_page: int = Field(description="Orders per page.", examples=[15])
    total: int = Field(description="Orders matching the filters.", examples=[1])
    last_page: int = Field(ge=1, description="At least 1.", examples=[1])
    next_cursor: str | None = Field(
        default=None,
        description="Cursor mode only: the `cursor` of the next page; null on the last page. "
        "Absent in page mode.",
        examples=["WyJrZXkiLCIyMDI2LTExLTI3VDEwOjAwOjAwKzAwOjAwIiw0Ml0"],
    )


class ListReply(Envelope):
    """The reply to `orders.list`."""

    success: Literal[True] = Field(default=True, description="Always true.", examples=[True])
    data: list[OrderView] = Field(description="The page's orders.", examples=[[ORDER_EXAMPLE]])
    pagination: Pagination = Field(
        description="The page.",
        examples=[{"current_page": 1, "per_page": 15, "total": 1, "last_page": 1}],
    )


class ErrorBody(Envelope):
    """The error of a refused request."""

    code: Literal[
        "bad_request",
        "validation_error",
        "not_found",
        "invalid_transition",
        "version_conflict",
        "idempotency_conflict",
        "unknown_action",
        "internal_error",
    ] = Field(description="The contract's error code.", examples=["not_found"])
    details: Any = Field(
        default=None,
        description="validation_error: [{loc, msg}]; invalid_transition: from, to, allowed; "
        "version_conflict: current_version; idempotency_conflict: key (an idempotency_key, "
        "request_id or message id used before with a different body).",
        examples=[{"id": 999}],
    )


class ErrorReply(Envelope):
    """Failure: nothing changed."""

    success: Literal[False] = Field(default=False, description="Always false.", examples=[False])
    message: str = Field(description="Human readable.", examples=["Order with id 999 not found"])
    error: ErrorBody = Field(
        description="code and details.", examples=[{"code": "not_found", "details": {"id": 999}}]
    )


class CustomerRevenue(Envelope):
    """One of the top customers by revenue."""

    customer_id: str = Field(description="Customer id on userhub.", examples=["CUST-12345"])
    orders: int = Field(description=_ORDERS, examples=[4])
    revenue: Amount = Field(description=_REVENUE, examples=[600.0])


class DayRevenue(Envelope):
    """Orders and revenue of one day (UTC)."""

    date: str = Field(description="YYYY-MM-DD, UTC.", examples=["2025-11-06"])
    orders: int = Field(description=_ORDERS, examples=[12])
    revenue: Amount = Field(description=_REVENUE, examples=[1800.0])


class StatsView(Envelope):
    """`data` of an `orders.stats` reply; amounts are JSON numbers with two decimals."""

    total_orders: int = Field(description="Orders matching the filters.", examples=[8])
    total_revenue: Amount = Field(
        description="Sum of totals of orders neither cancelled nor refunded.", examples=[1200.0]
    )
    average_order_value: Amount = Field(
        description="total_revenue / the orders it counts.", examples=[200.0]
    )
    active_orders: int = Field(
        description="Orders not completed, cancelled or refunded.", examples=[5]
    )
    pending_orders: int = Field(description="Orders in status pending.", examples=[1])
    processing_orders: int = Field(description="Orders in status processing.", examples=[1])
    confirmed_orders: int = Field(description="Orders in status confirmed.", examples=[1])
    in_progress_orders: int = Field(description="Orders in status in_progress.", examples=[1])
    completed_orders: int = Field(description="Orders in status completed.", examples=[1])
    cancelled_orders: int = Field(description="Orders in status cancelled.", examples=[1])
    refunded_orders: int = Field(description="Orders in status refunded.", examples=[1])
    on_hold_orders: int = Field(description="Orders in status on_hold.", examples=[1])
    status_breakdown: dict[str, int] = Field(
        description="{status: count}, all eight statuses.",
        examples=[
            {
                "pending": 1,
                "processing": 1,
                "confirmed": 1,
                "in_progress": 1,
                "completed": 1,
                "cancelled": 1,
                "refunded": 1,
                "on_hold": 1,
            }
        ],
    )
    revenue_by_currency: dict[str, Amount] = Field(
        description="{currency: revenue}.", examples=[{"EUR": 1200.0}]
    )
    revenue_by_day: list[DayRevenue] = Field(
        description="One entry per day with orders.",
        examples=[[{"date": "2025-11-06", "orders": 8, "revenue": 1200.0}]],
    )
    top_customers: list[CustomerRevenue] = Field(
        description="Top 10 by revenue.",
        examples=[[{"customer_id": "CUST-12345", "orders": 4, "revenue": 600.0}]],
    )
    unique_customers: int = Field(description="Distinct customers.", examples=[3])
    repeat_customers: int = Field(description="Customers with more than one order.", examples=[2])


STATS_EXAMPLE = {
    name: field.examples[0] for name, field in StatsView.model_fields.items() if field.examples
}


class StatsReply(Envelope):
    """The reply to `orders.stats`."""

    success: Literal[True] = Field(default=True, description="Always true.", examples=[True])
    data: StatsView = Field(description="Counts and revenue.", examples=[STATS_EXAMPLE])
