"""The order as replies and `order.placed` show it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from schemas.commands import Billing
from service.domain.statuses import OrderStatus

TIMESTAMP = "UTC, microseconds, `Z`: 2025-11-06T15:00:00.000000Z"


class View(BaseModel):
    model_config = ConfigDict(frozen=True)


class ItemView(View):
    product_id: int | str = Field(examples=[2])
    product_name: str = Field(examples=["Window Cleaning"])
    quantity: int = Field(examples=[2])
    price: str = Field(description="Two decimals.", examples=["75.00"])
    metadata: dict[str, Any] | None = None


class HistoryEntry(View):
    from_: OrderStatus | None = Field(alias="from", description="null on the placing entry.")
    to: OrderStatus
    at: str = Field(description=TIMESTAMP)
    action: str = Field(description="place, update_status, cancel or complete.")
    notes: str | None = None
    reason: str | None = None


class OrderView(View):
    id: int = Field(description="Sequential database id, from 1.", examples=[3])
    order_id: int = Field(description="Public order number (>= 6 digits).", examples=[421409])
    customer_id: str = Field(examples=["CUST-12345"])
    user_id: str | None = None
    items: list[ItemView]
    billing: Billing
    subtotal: str = Field(description="Sum of quantity x price.", examples=["300.00"])
    total_tax: str = Field(examples=["0.00"])
    total: str = Field(examples=["300.00"])
    currency: str = Field(examples=["EUR"])
    currency_symbol: str = Field(examples=["€"])
    status: OrderStatus
    notes: str | None = None
    metadata: dict[str, Any]
    version: int = Field(description="1 on placing, +1 on every change.", examples=[1])
    status_history: list[HistoryEntry] = Field(description="Oldest first.")
    created_at: str = Field(description=TIMESTAMP, examples=["2025-11-06T15:00:00.000000Z"])
    updated_at: str = Field(description=TIMESTAMP, examples=["2025-11-06T15:00:00.000000Z"])
