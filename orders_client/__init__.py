"""A typed async client of the orders service, and the `orders` command line."""

from orders_client.client import (
    Action,
    DeadLetter,
    EventStream,
    OrderEvent,
    OrdersClient,
    OrdersPage,
    Placed,
)
from orders_client.errors import (
    BadRequest,
    ConnectionLost,
    IdempotencyConflict,
    InternalServiceError,
    InvalidTransition,
    OrderNotFound,
    OrdersError,
    RequestTimeout,
    UnexpectedReply,
    UnknownAction,
    Unroutable,
    ValidationFailed,
    VersionConflict,
)
from orders_client.events import Since

__all__ = [
    "Action",
    "BadRequest",
    "ConnectionLost",
    "DeadLetter",
    "EventStream",
    "IdempotencyConflict",
    "InternalServiceError",
    "InvalidTransition",
    "OrderEvent",
    "OrderNotFound",
    "OrdersClient",
    "OrdersError",
    "OrdersPage",
    "Placed",
    "RequestTimeout",
    "Since",
    "UnexpectedReply",
    "UnknownAction",
    "Unroutable",
    "ValidationFailed",
    "VersionConflict",
]
