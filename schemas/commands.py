"""Commands: `orders.place` (PlaceOrder) and `orders.action` (OrderAction)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
    TypeAdapter,
    model_validator,
)

from schemas.types import (
    Currency,
    DatabaseId,
    Metadata,
    Money,
    Name,
    Notes,
    PublicOrderId,
    Reference,
    ShortText,
    Status,
)
from service.domain.statuses import OrderStatus


class Contract(BaseModel):
    """Base of every inbound body: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class OrderItem(Contract):
    product_id: Annotated[int, Field(strict=True, ge=-(2**63), lt=2**63)] | Reference = Field(
        description="Product reference: an integer or a string.", examples=[1]
    )
    product_name: ShortText = Field(
        description="Name shown to people.", examples=["Window Cleaning"]
    )
    quantity: int = Field(strict=True, ge=1, le=10_000, description="Units.", examples=[2])
    price: Money = Field(description="Unit price.", examples=["75.00"])
    metadata: Metadata | None = Field(default=None, description="Item metadata.")


class Billing(Contract):
    first_name: Name = Field(examples=["John"])
    last_name: Name = Field(examples=["Doe"])
    email: EmailStr = Field(examples=["john.doe@example.com"])
    phone: Annotated[str, StringConstraints(strip_whitespace=True, max_length=32)] | None = Field(
        default=None, examples=["+31612345678"]
    )
    address: ShortText | None = Field(default=None, examples=["123 Main Street"])
    city: Name | None = Field(default=None, examples=["Amsterdam"])
    postal_code: Annotated[str, StringConstraints(strip_whitespace=True, max_length=20)] | None = (
        Field(default=None, examples=["1012AB"])
    )
    country: Name | None = Field(default=None, examples=["NL"])


class PlaceOrder(Contract):
    """Place a new order (routing key `orders.place`)."""

    customer_id: Reference = Field(description="Customer id on userhub.", examples=["CUST-12345"])
    user_id: Reference | None = Field(default=None, description="Userhub user who placed it.")
    items: list[OrderItem] = Field(min_length=1, max_length=500, description="1 to 500 items.")
    billing: Billing = Field(description="Billing snapshot.")
    total: Money | None = Field(default=None, description="Defaults to subtotal + total_tax.")
    total_tax: Money | None = Field(default=None, description="Defaults to 0.00.")
    status: Status = Field(default=OrderStatus.PENDING, description="Initial status.")
    notes: Notes | None = Field(default=None, examples=["Please call before arrival"])
    metadata: Metadata = Field(default_factory=dict)
    currency: Currency | None = Field(default=None, description="Defaults to the service's.")
    idempotency_key: ShortText | None = Field(
        default=None,
        description="Placing the same key again returns the first order and creates nothing.",
        examples=["webform-7f3c2a"],
    )


class ActionTarget(Contract):
    """Which order an action is for, and its optimistic-concurrency and de-duplication keys."""

    id: DatabaseId | None = None
    order_id: PublicOrderId | None = None
    expected_version: int | None = Field(
        default=None,
        strict=True,
        ge=1,
        le=2**62,
        description="Refuse unless the order is at this version.",
    )
    request_id: ShortText | None = Field(
        default=None, description="A repeated request_id on the same order is applied once."
    )

    @model_validator(mode="after")
    def _one_key(self) -> ActionTarget:
        if (self.id is None) == (self.order_id is None):
            raise ValueError("give exactly one of id or order_id")
        return self


class UpdateStatus(ActionTarget):
    action: Literal["update_status"]
    status: Status
    notes: Notes | None = None


class CancelOrder(ActionTarget):
    action: Literal["cancel"]
    reason: Notes | None = None
    notes: Notes | None = None


class CompleteOrder(ActionTarget):
    action: Literal["complete"]
    notes: Notes | None = None


class UpdateMetadata(ActionTarget):
    action: Literal["update_metadata"]
    metadata: Metadata
    mode: Literal["merge", "replace"] = Field(
        default="merge",
        description="merge: a key set to null is removed; replace: the whole object.",
    )


OrderAction = Annotated[
    UpdateStatus | CancelOrder | CompleteOrder | UpdateMetadata,
    Field(discriminator="action"),
]
"""Act on an order (routing key `orders.action`)."""

OrderActionAdapter: TypeAdapter[OrderAction] = TypeAdapter(OrderAction)

ACTION_NAMES: tuple[str, ...] = ("update_status", "cancel", "complete", "update_metadata")


def action_name(body: dict[str, Any]) -> object:
    """The raw `action` field, before any validation."""
    return body.get("action")
