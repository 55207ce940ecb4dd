"""HTTP requests to the bodies the broker handlers take: the same JSON, the same models.

A POST body must be `application/json`; it is read as bytes, no further than the size
limit, and decoded by `decode_object`, as a message body is (exact decimals, size and depth
limits). Query parameters are strings: they become the JSON types
the query model's fields take, and the model validates them as it validates a message.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any, ClassVar

from pydantic import BaseModel
from starlette.datastructures import QueryParams
from starlette.requests import Request

from service.domain.errors import BadRequest, ValidationFailed
from service.wire import decode_object

JSON = "application/json"
UTF8 = ("utf-8", "utf8")
_INTEGER = re.compile(r"[+-]?\d{1,20}")
_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}


class RefusedBody(BadRequest):
    """A body refused before it is parsed, with an HTTP status of its own."""

    status: ClassVar[int] = 400


class BodyTooLarge(RefusedBody):
    status = 413


class NotJson(RefusedBody):
    status = 415


async def read_object(request: Request, *, limit: int) -> dict[str, Any]:
    """The body as a JSON object of at most `limit` bytes, read no further than that, sent as
    `application/json` (a UTF-8 charset parameter allowed): a browser cannot send that type
    across sites without asking first (CORS), as it can `text/plain` or a form."""
    require_json(request.headers.get("content-type", ""))
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"Request body is {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"Request body is more than {limit} bytes")
        chunks.append(chunk)
    return decode_object(b"".join(chunks), limit=limit)


def require_json(content_type: str) -> None:
    """Refuse (415) anything but `application/json`, with no charset or UTF-8."""
    media_type, *parameters = content_type.split(";")
    if media_type.strip().lower() != JSON:
        shown = media_type.strip()[:100] or "none"
        raise NotJson(f"Content-Type must be {JSON}, not {shown}")
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in UTF8:
            raise NotJson(f"A {JSON} body is UTF-8, not {value.strip()[:40]}")


def with_header(body: dict[str, Any], field: str, header: str | None) -> dict[str, Any]:
    """`body` with the `Idempotency-Key` header as `field` (a `null` there counts as absent);
    a different value in both is refused rather than one of them silently winning."""
    if header is None:
        return body
    if body.get(field) is not None and body[field] != header:
        raise ValidationFailed(
            [{"loc": [field], "msg": f"differs from the Idempotency-Key header {header!r}"}],
            f"Invalid {field}: differs from the Idempotency-Key header",
        )
    return body | {field: header}


def query_object(model: type[BaseModel], params: QueryParams) -> dict[str, Any]:
    """The query string as the body `model` validates: integers and booleans as such, a
    repeated parameter (`status=a&status=b`) as a list, text as text. A value that does not
    read as its field's type stays text, so the model's own error names it."""
    kinds = field_kinds(model)
    body: dict[str, Any] = {}
    for name in dict.fromkeys(params.keys()):
        values = params.getlist(name)
        kind = kinds.get(name, "string")
        if kind == "array":
            body[name] = values
        elif len(values) > 1:
            body[name] = values  # one value expected: the model refuses the list
        else:
            body[name] = _scalar(values[0], kind)
    return body


def _scalar(value: str, kind: str) -> Any:
    if kind == "integer" and _INTEGER.fullmatch(value):
        return int(value)
    if kind == "boolean":
        return _BOOLEANS.get(value.lower(), value)
    return value


@cache
def field_kinds(model: type[BaseModel]) -> dict[str, str]:
    """Each field's JSON type (`integer`, `boolean`, `array`, `string`), null left aside."""
    properties: dict[str, Any] = model.model_json_schema()["properties"]
    return {name: _kind(schema) for name, schema in properties.items()}


def _kind(schema: dict[str, Any]) -> str:
    for variant in schema.get("anyOf", [schema]):
        if variant.get("type") not in (None, "null"):
            return str(variant["type"])
    return "string"
