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

from orders_vocabulary.statuses import OrderStatus
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

ITEM_EXAMPLE = {
    "product_id": 1,
    "product_name": "Window Cleaning",
    "quantity": 2,
    "price": "75.00",
}
BILLING_EXAMPLE = {
    "first_name": "John",
    "last_name": "Doe",
    "email": "john.doe@example.com",
    "phone": "+31612345678",
}


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
    metadata: Metadata | None = Field(
        default=None, description="Item metadata.", examples=[{"color": "blue"}]
    )


class Billing(Contract):
    """The customer's billing details, copied into the order when it is placed."""

    first_name: Name = Field(description="First name.", examples=["John"])
    last_name: Name = Field(description="Last name.", examples=["Doe"])
    email: EmailStr = Field(description="A valid email address.", examples=["john.doe@example.com"])
    phone: Annotated[str, StringConstraints(strip_whitespace=True, max_length=32)] | None = Field(
        default=None, description="Phone number, free text.", examples=["+31612345678"]
    )
    address: ShortText | None = Field(
        default=None, description="Street and number.", examples=["123 Main Street"]
    )
    city: Name | None = Field(default=None, description="City.", examples=["Amsterdam"])
    postal_code: Annotated[str, StringConstraints(strip_whitespace=True, max_length=20)] | None = (
        Field(default=None, description="Postal code.", examples=["1012AB"])
    )
    country: Name | None = Field(default=None, description="Country.", examples=["NL"])


class PlaceOrder(Contract):
    """Place a new order (routing key `orders.place`)."""

    customer_id: Reference = Field(description="Customer id on userhub.", examples=["CUST-12345"])
    user_id: Reference | None = Field(
        default=None, description="Userhub user who placed it.", examples=["USER-789"]
    )
    items: list[OrderItem] = Field(
        min_length=1,
        max_length=500,
        description="1 to 500 items.",
        examples=[[ITEM_EXAMPLE]],
    )
    billing: Billing = Field(description="Billing snapshot.", examples=[BILLING_EXAMPLE])
    total: Money | None = Field(
        default=None, description="Defaults to subtotal + total_tax.", examples=["150.00"]
    )
    total_tax: Money | None = Field(
        default=None, description="Defaults to 0.00.", examples=["0.00"]
    )
    status: Status = Field(
        default=OrderStatus.PENDING, description="Initial status.", examples=["pending"]
    )
    notes: Notes | None = Field(
        default=None,
        description="Free text, at most 5,000 characters.",
        examples=["Please call before arrival"],
    )
    metadata: Metadata = Field(default_factory=dict)
    currency: Currency | None = Field(
        default=None, description="Defaults to the service's.", examples=["EUR"]
    )
    idempotency_key: ShortText | None = Field(
        default=None,
        description="Placing the same key again with the same body returns the first order "
        "and creates nothing; with another body it is an idempotency_conflict.",
        examples=["webform-7f3c2a"],
    )


class ActionTarget(Contract):
    """Which order an action is for, and its optimistic-concurrency and de-duplication keys."""

    id: DatabaseId | None = Field(
        default=None, description="Database id (give this or order_id).", examples=[3]
    )
    order_id: PublicOrderId | None = Field(
        default=None, description="Public order number (give this or id).", examples=[421409]
    )
    expected_version: int | None = Field(
        default=None,
        strict=True,
        ge=1,
        le=2**62,
        description="Refuse unless the order is at this version.",
        examples=[1],
    )
    request_id: ShortText | None = Field(
        default=None,
        description="A repeated request_id with the same action on the same order is applied "
        "once; with another action it is an idempotency_conflict.",
        examples=["backoffice-5e1d"],
    )

    @model_validator(mode="after")
    def _one_key(self) -> ActionTarget:
        if (self.id is None) == (self.order_id is None):
            raise ValueError("give exactly one of id or order_id")
        return self


_NOTES = "Free text for the status history, at most 5,000 characters."


class UpdateStatus(ActionTarget):
    """Move the order to `status`, if the transition table allows it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"id": 3, "action": "update_status", "status": "processing", "notes": "Picked up"}
            ]
        }
    )

    action: Literal["update_status"] = Field(
        description="The action name.", examples=["update_status"]
    )
    status: Status = Field(description="The status to move to.", examples=["processing"])
    notes: Notes | None = Field(default=None, description=_NOTES, examples=["Picked up"])


class CancelOrder(ActionTarget):
    """`update_status` to `cancelled`."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"order_id": 421409, "action": "cancel", "reason": "Customer request"}]
        }
    )

    action: Literal["cancel"] = Field(description="The action name.", examples=["cancel"])
    reason: Notes | None = Field(
        default=None, description="Why it was cancelled.", examples=["Customer request"]
    )
    notes: Notes | None = Field(default=None, description=_NOTES, examples=["Refund by phone"])


class CompleteOrder(ActionTarget):
    """`update_status` to `completed`."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"id": 3, "action": "complete", "expected_version": 2}]}
    )

    action: Literal["complete"] = Field(description="The action name.", examples=["complete"])
    notes: Notes | None = Field(default=None, description=_NOTES, examples=["Delivered"])


class UpdateMetadata(ActionTarget):
    """Merge into or replace the order's metadata; the status does not change."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"id": 3, "action": "update_metadata", "metadata": {"priority": "high"}}]
        }
    )

    action: Literal["update_metadata"] = Field(
        description="The action name.", examples=["update_metadata"]
    )
    metadata: Metadata = Field(
        description="Keys to set (merge; null removes a key) or the whole new object (replace).",
        examples=[{"priority": "high"}],
    )
    mode: Literal["merge", "replace"] = Field(
        default="merge",
        description="merge: a key set to null is removed; replace: the whole object.",
        examples=["merge"],
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
