"""Events on the `orders.events` exchange. Consumers de-duplicate on `event_id`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.orders import TIMESTAMP, OrderView
from service.domain.statuses import OrderStatus


class Event(BaseModel):
    model_config = ConfigDict(frozen=True)

    event_id: str = Field(description="Unique; also the AMQP message_id.")
    occurred_at: str = Field(description=TIMESTAMP)


class OrderPlaced(Event):
    """Routing key `order.placed`."""

    event_type: Literal["order.placed"] = "order.placed"
    order: OrderView


class OrderStatusChanged(Event):
    """Routing key `order.status_changed`."""

    event_type: Literal["order.status_changed"] = "order.status_changed"
    id: int
    order_id: int
    customer_id: str
    user_id: str | None
    from_status: OrderStatus
    to_status: OrderStatus
    action: str = Field(description="update_status, cancel or complete.")
    notes: str | None
    reason: str | None
    version: int


class OrderMetadataUpdated(Event):
    """Routing key `order.metadata_updated`."""

    event_type: Literal["order.metadata_updated"] = "order.metadata_updated"
    id: int
    order_id: int
    metadata: dict[str, Any]
    version: int


class RejectionError(BaseModel):
    code: str
    message: str
    details: Any = None


class OrderCommandRejected(Event):
    """Routing key `order.command_rejected`: a command without `reply_to` was refused."""

    event_type: Literal["order.command_rejected"] = "order.command_rejected"
    routing_key: str
    error: RejectionError
    payload: Any = Field(description="The body as JSON, or as text when it was not JSON.")
