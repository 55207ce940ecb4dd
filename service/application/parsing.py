"""Bodies to commands and queries; pydantic errors to the contract's `validation_error`."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from schemas.commands import ACTION_NAMES, OrderAction, OrderActionAdapter
from service.domain.errors import UnknownAction, ValidationFailed

ModelT = TypeVar("ModelT", bound=BaseModel)


def validation_failed(
    error: ValidationError, body: dict[str, Any], *, drop_prefix: int = 0
) -> ValidationFailed:
    """`[{"loc": [...], "msg": "..."}]`, with pydantic's internal union/validator tags removed."""
    details = [
        {"loc": _clean_loc(item["loc"][drop_prefix:], body), "msg": item["msg"]}
        for item in error.errors(include_url=False, include_context=False, include_input=False)
    ]
    first = details[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    return ValidationFailed(details, f"Invalid {where}: {first['msg']}")


def _clean_loc(loc: tuple[int | str, ...], body: Any) -> list[int | str]:
    """Walk `loc` through the body: parts that name a key or index are kept; a part that
    names nothing in the body is a pydantic tag (`int`, `function-after[...]`) unless it is
    the name of a missing field."""
    kept: list[int | str] = []
    current: Any = body
    for part in loc:
        if _holds(current, part):
            current = current[part]
        elif isinstance(part, str) and (
            "[" in part or part in _PYDANTIC_TAGS or part.startswith("constrained-")
        ):
            continue
        else:
            current = None
        kept.append(part)
    return kept


def _holds(container: Any, part: int | str) -> bool:
    if isinstance(container, dict):
        return part in container
    return isinstance(container, list) and isinstance(part, int) and 0 <= part < len(container)


_PYDANTIC_TAGS = frozenset({"int", "str", "constrained-str", "bool", "float", "decimal"})


def parse(model: type[ModelT], body: dict[str, Any]) -> ModelT:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise validation_failed(exc, body) from None


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
        raise validation_failed(exc, body, drop_prefix=1) from None
