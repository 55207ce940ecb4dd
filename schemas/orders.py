"""The order as replies and `order.placed` show it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from orders_vocabulary.statuses import OrderStatus
from schemas.commands import BILLING_EXAMPLE, ITEM_EXAMPLE, Billing

TIMESTAMP = "UTC, microseconds, `Z`: 2025-11-06T15:00:00.000000Z"
AT = "2025-11-06T15:00:00.000000Z"

HISTORY_EXAMPLE = {
    "from": None,
    "to": "pending",
    "at": AT,
    "action": "place",
    "notes": None,
    "reason": None,
}
ORDER_EXAMPLE: dict[str, Any] = {
    "id": 3,
    "order_id": 421409,
    "customer_id": "CUST-12345",
    "user_id": None,
    "items": [ITEM_EXAMPLE | {"metadata": None}],
    "billing": BILLING_EXAMPLE
    | {"address": None, "city": None, "postal_code": None, "country": None},
    "subtotal": "150.00",
    "total_tax": "0.00",
    "total": "150.00",
    "currency": "EUR",
    "currency_symbol": "€",
    "status": "pending",
    "notes": None,
    "metadata": {},
    "version": 1,
    "status_history": [HISTORY_EXAMPLE],
    "created_at": AT,
    "updated_at": AT,
}


class View(BaseModel):
    model_config = ConfigDict(frozen=True)


class ItemView(View):
    """One line of an order."""

    product_id: int | str = Field(description="Product reference, as placed.", examples=[2])
    product_name: str = Field(description="Name shown to people.", examples=["Window Cleaning"])
    quantity: int = Field(description="Units.", examples=[2])
    price: str = Field(description="Unit price, two decimals.", examples=["75.00"])
    metadata: dict[str, Any] | None = Field(
        default=None, description="Item metadata, as placed.", examples=[{"color": "blue"}]
    )


class HistoryEntry(View):
    """One status change, oldest first."""

    from_: OrderStatus | None = Field(
        alias="from", description="null on the placing entry.", examples=["pending"]
    )
    to: OrderStatus = Field(description="The status after the change.", examples=["processing"])
    at: str = Field(description=TIMESTAMP, examples=[AT])
    action: str = Field(
        description="place, update_status, cancel or complete.", examples=["update_status"]
    )
    notes: str | None = Field(
        default=None, description="The action's notes.", examples=["Picked up"]
    )
    reason: str | None = Field(
        default=None, description="The cancel reason.", examples=["Customer request"]
    )


class OrderView(View):
    """An order, as `orders.get`, `orders.place` and `order.placed` show it."""

    id: int = Field(description="Sequential database id, from 1.", examples=[3])
    order_id: int = Field(description="Public order number (>= 6 digits).", examples=[421409])
    customer_id: str = Field(description="Customer id on userhub.", examples=["CUST-12345"])
    user_id: str | None = Field(
        default=None, description="Userhub user who placed it.", examples=["USER-789"]
    )
    items: list[ItemView] = Field(description="The order lines.", examples=[[ITEM_EXAMPLE]])
    billing: Billing = Field(description="Billing snapshot.", examples=[BILLING_EXAMPLE])
    subtotal: str = Field(description="Sum of quantity x price.", examples=["300.00"])
    total_tax: str = Field(description="Tax, two decimals.", examples=["0.00"])
    total: str = Field(description="As given, or subtotal + total_tax.", examples=["300.00"])
    currency: str = Field(description="ISO 4217 code.", examples=["EUR"])
    currency_symbol: str = Field(description="The currency's symbol.", examples=["€"])
    status: OrderStatus = Field(description="The current status.", examples=["pending"])
    notes: str | None = Field(
        default=None, description="As placed.", examples=["Please call before arrival"]
    )
    metadata: dict[str, Any] = Field(
        description="As placed and updated.", examples=[{"source": "webform"}]
    )
    version: int = Field(description="1 on placing, +1 on every change.", examples=[1])
    status_history: list[HistoryEntry] = Field(
        description="Oldest first.", examples=[[HISTORY_EXAMPLE]]
    )
    created_at: str = Field(description=TIMESTAMP, examples=[AT])
    updated_at: str = Field(description=TIMESTAMP, examples=[AT])
