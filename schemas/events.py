"""Events on the `orders.events` exchange. Consumers de-duplicate on `event_id`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from orders_vocabulary.statuses import OrderStatus
from schemas.orders import AT, ORDER_EXAMPLE, TIMESTAMP, OrderView

_VERSION = "The order's version after the change."


class Event(BaseModel):
    model_config = ConfigDict(frozen=True)

    event_id: str = Field(
        description="Unique; also the AMQP message_id.",
        examples=["0f8e7d6c-5b4a-4c3d-9e2f-1a0b9c8d7e6f"],
    )
    occurred_at: str = Field(description=TIMESTAMP, examples=[AT])


class OrderPlaced(Event):
    """Routing key `order.placed`."""

    event_type: Literal["order.placed"] = Field(
        default="order.placed", description="The routing key.", examples=["order.placed"]
    )
    order: OrderView = Field(description="The order as placed.", examples=[ORDER_EXAMPLE])


class OrderStatusChanged(Event):
    """Routing key `order.status_changed`."""

    event_type: Literal["order.status_changed"] = Field(
        default="order.status_changed",
        description="The routing key.",
        examples=["order.status_changed"],
    )
    id: int = Field(description="Database id.", examples=[3])
    order_id: int = Field(description="Public order number.", examples=[421409])
    customer_id: str = Field(description="Customer id on userhub.", examples=["CUST-12345"])
    user_id: str | None = Field(description="Userhub user who placed it.", examples=["USER-789"])
    from_status: OrderStatus = Field(description="The status before.", examples=["pending"])
    to_status: OrderStatus = Field(description="The status after.", examples=["processing"])
    action: str = Field(
        description="update_status, cancel or complete.", examples=["update_status"]
    )
    notes: str | None = Field(description="The action's notes.", examples=["Picked up"])
    reason: str | None = Field(description="The cancel reason.", examples=[None])
    version: int = Field(description=_VERSION, examples=[2])


class OrderMetadataUpdated(Event):
    """Routing key `order.metadata_updated`."""

    event_type: Literal["order.metadata_updated"] = Field(
        default="order.metadata_updated",
        description="The routing key.",
        examples=["order.metadata_updated"],
    )
    id: int = Field(description="Database id.", examples=[3])
    order_id: int = Field(description="Public order number.", examples=[421409])
    metadata: dict[str, Any] = Field(
        description="The whole metadata after the update.",
        examples=[{"source": "webform", "priority": "high"}],
    )
    version: int = Field(description=_VERSION, examples=[2])


class RejectionError(BaseModel):
    """Why a command was refused: the error of the reply it would have had."""

    code: str = Field(description="The contract's error code.", examples=["invalid_transition"])
    message: str = Field(
        description="Human readable.", examples=["Cannot change status from completed to pending"]
    )
    details: Any = Field(
        default=None,
        description="Depends on the code (see the error codes).",
        examples=[{"from": "completed", "to": "pending", "allowed": ["refunded"]}],
    )


class OrderCommandRejected(Event):
    """Routing key `order.command_rejected`: a command without `reply_to` was refused."""

    event_type: Literal["order.command_rejected"] = Field(
        default="order.command_rejected",
        description="The routing key.",
        examples=["order.command_rejected"],
    )
    routing_key: str = Field(
        description="The refused command's routing key.", examples=["orders.action"]
    )
    error: RejectionError = Field(
        description="code, message, details.",
        examples=[
            {
                "code": "invalid_transition",
                "message": "Cannot change status from completed to pending",
                "details": {"from": "completed", "to": "pending", "allowed": ["refunded"]},
            }
        ],
    )
    payload: Any = Field(
        description="The body as JSON, or as text when it was not JSON.",
        examples=[{"id": 3, "action": "update_status", "status": "pending"}],
    )
