"""Bodies to commands and queries; pydantic errors to the contract's `validation_error`."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from schemas.commands import ACTION_NAMES, OrderAction, OrderActionAdapter
from service.domain.errors import UnknownAction, ValidationFailed

ModelT = TypeVar("ModelT", bound=BaseModel)


def validation_failed(error: ValidationError, *, drop_prefix: int = 0) -> ValidationFailed:
    """`[{"loc": [...], "msg": "..."}]`, with pydantic's internal union/validator tags removed."""
    details = [
        {
            "loc": [part for part in item["loc"][drop_prefix:] if not _is_tag(part)],
            "msg": item["msg"],
        }
        for item in error.errors(include_url=False, include_context=False, include_input=False)
    ]
    first = details[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    return ValidationFailed(details, f"Invalid {where}: {first['msg']}")


def _is_tag(part: int | str) -> bool:
    return isinstance(part, str) and ("[" in part or part in {"int", "str", "constrained-str"})


def parse(model: type[ModelT], body: dict[str, Any]) -> ModelT:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise validation_failed(exc) from None


def parse_action(body: dict[str, Any]) -> OrderAction:
    """The action name is checked before its fields (`unknown_action` first)."""
    name = body.get("action")
    if name is None:
        raise ValidationFailed([{"loc": ["action"], "msg": "Field required"}], "Missing action")
    if not isinstance(name, str) or name not in ACTION_NAMES:
        raise UnknownAction(name, ACTION_NAMES)
    try:
        return OrderActionAdapter.validate_python(body)
    except ValidationError as exc:
        raise validation_failed(exc, drop_prefix=1) from None
