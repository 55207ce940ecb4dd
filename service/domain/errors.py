"""The one error vocabulary. Each error knows its contract code; `application.errors` renders
them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from orders_vocabulary.statuses import OrderStatus


class OrderError(Exception):
    """A request that the service understood and refused."""

    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class BadRequest(OrderError):
    """The body is not a JSON object, is too large or is not UTF-8."""

    code = "bad_request"


class ValidationFailed(OrderError):
    """The body is an object but a field is missing or wrong."""

    code = "validation_error"

    def __init__(
        self, errors: Sequence[dict[str, Any]], message: str = "Validation failed"
    ) -> None:
        super().__init__(message, list(errors))


class UnknownAction(OrderError):
    code = "unknown_action"

    def __init__(self, action: object, known: Sequence[str]) -> None:
        shown = action[:100] if isinstance(action, str) else f"<{type(action).__name__}>"
        super().__init__(
            f"Unknown action {shown!r}; expected one of: {', '.join(known)}",
            {"action": shown, "allowed": list(known)},
        )


class OrderNotFound(OrderError):
    code = "not_found"

    def __init__(self, key: str, value: int) -> None:
        super().__init__(f"Order with {key} {value} not found", {key: value})


class InvalidTransition(OrderError):
    code = "invalid_transition"

    def __init__(
        self, source: OrderStatus, target: OrderStatus, allowed: Sequence[OrderStatus]
    ) -> None:
        super().__init__(
            f"Cannot change status from {source} to {target}",
            {"from": str(source), "to": str(target), "allowed": [str(s) for s in allowed]},
        )


class VersionConflict(OrderError):
    code = "version_conflict"

    def __init__(self, expected: int, current: int) -> None:
        super().__init__(
            f"Order is at version {current}, not {expected}",
            {"expected_version": expected, "current_version": current},
        )


class ConcurrentChange(OrderError):
    """The order kept changing under a request without `expected_version`; try again."""

    code = "version_conflict"

    def __init__(self, current: int) -> None:
        super().__init__("Order changed concurrently; retry", {"current_version": current})


class IdempotencyConflict(OrderError):
    """A key (`idempotency_key`, `request_id` or message id) used before for another body."""

    code = "idempotency_conflict"

    def __init__(self, key: str, *, from_message: bool = False) -> None:
        what = "Message id" if from_message else "Key"
        super().__init__(
            f"{what} {key[:100]!r} was used before with a different request; nothing changed",
            {"key": key},
        )
