"""Typed exceptions: one per error code of the contract, under one base class."""

from __future__ import annotations

from typing import Any


class OrdersError(Exception):
    """An error reply of the orders service (or a client-side failure), with its code.

    `code` is the contract's error code (`not_found`, `invalid_transition`, ...), or
    `timeout` / `connection_error` / `unexpected_reply` for failures on the client side.
    """

    code: str = "error"

    def __init__(self, message: str, *, code: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class BadRequest(OrdersError):
    """The body is not a JSON object, too large, not UTF-8 or nested too deep."""

    code = "bad_request"


class ValidationFailed(OrdersError):
    """A field is missing, of the wrong type, out of range or unknown.

    `details` is the service's list of `{"loc": [...], "msg": "..."}`.
    """

    code = "validation_error"


class OrderNotFound(OrdersError):
    """No order with that `id` / `order_id`."""

    code = "not_found"


class InvalidTransition(OrdersError):
    """The transition table does not allow it; `details` has `from`, `to` and `allowed`."""

    code = "invalid_transition"

    @property
    def from_status(self) -> str | None:
        return self._detail("from")

    @property
    def to_status(self) -> str | None:
        return self._detail("to")

    @property
    def allowed(self) -> list[str]:
        value = self.details.get("allowed") if isinstance(self.details, dict) else None
        return [str(status) for status in value] if isinstance(value, list) else []

    def _detail(self, key: str) -> str | None:
        value = self.details.get(key) if isinstance(self.details, dict) else None
        return None if value is None else str(value)


class VersionConflict(OrdersError):
    """`expected_version` did not match; `current_version` is the order's version."""

    code = "version_conflict"

    @property
    def current_version(self) -> int | None:
        value = self.details.get("current_version") if isinstance(self.details, dict) else None
        return value if isinstance(value, int) else None


class IdempotencyConflict(OrdersError):
    """The `idempotency_key`, `request_id` or message id was used before with a different
    body; nothing changed. `key` is that key."""

    code = "idempotency_conflict"

    @property
    def key(self) -> str | None:
        value = self.details.get("key") if isinstance(self.details, dict) else None
        return None if value is None else str(value)


class UnknownAction(OrdersError):
    """`action` is not one of the four."""

    code = "unknown_action"


class InternalServiceError(OrdersError):
    """The service failed unexpectedly (the message is also dead-lettered)."""

    code = "internal_error"


class RequestTimeout(OrdersError, TimeoutError):
    """No reply arrived within the call's timeout."""

    code = "timeout"


class ConnectionLost(OrdersError, ConnectionError):
    """The connection to RabbitMQ closed while a request was waiting, or could not open."""

    code = "connection_error"


class Unroutable(OrdersError):
    """The broker routed the request to no queue: the worker has not declared its queues."""

    code = "unroutable"


class UnexpectedReply(OrdersError):
    """A reply that does not follow the contract's envelope."""

    code = "unexpected_reply"


ERRORS_BY_CODE: dict[str, type[OrdersError]] = {
    error.code: error
    for error in (
        BadRequest,
        ValidationFailed,
        OrderNotFound,
        InvalidTransition,
        VersionConflict,
        IdempotencyConflict,
        UnknownAction,
        InternalServiceError,
    )
}


def error_from_reply(message: str, code: str, details: Any) -> OrdersError:
    """The exception for an error reply; an unknown code gives the base class."""
    return ERRORS_BY_CODE.get(code, OrdersError)(message, code=code, details=details)
