"""Bytes on the wire: strict JSON in (exact decimals), compact JSON out (Decimal as a number)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import orjson

from service.domain.errors import BadRequest

MAX_DEPTH = 64
MAX_EXPONENT = 1000


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode_object(raw: bytes, *, limit: int, allow_empty: bool = False) -> dict[str, Any]:
    """Parse a command or query body: a UTF-8 JSON object of at most `limit` bytes.

    Numbers with a fraction become `Decimal`, so no amount ever passes through a float.
    """
    if len(raw) > limit:
        raise BadRequest(f"Message body is {len(raw)} bytes; the limit is {limit}")
    if allow_empty and not raw.strip():
        return {}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest("Message body is not UTF-8") from exc
    try:
        body = json.loads(text, parse_float=Decimal, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise BadRequest("Message body is not valid JSON") from exc
    if not isinstance(body, dict):
        raise BadRequest(f"Message body must be a JSON object, not {type(body).__name__}")
    _check_tree(body)
    return body


def _check_tree(body: dict[str, Any]) -> None:
    """Refuse bodies nested deeper than MAX_DEPTH, carrying lone surrogates (not UTF-8), or
    numbers no field could hold (`1e5000000` would cost seconds to turn into an integer)."""
    stack: list[tuple[Any, int]] = [(body, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise BadRequest(f"Message body is nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            for key, item in value.items():
                _check_text(key)
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            _check_text(value)
        elif isinstance(value, Decimal) and (
            not value.is_finite() or abs(value.adjusted()) > MAX_EXPONENT
        ):
            raise BadRequest(f"Message body has a number beyond 1e{MAX_EXPONENT}")


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadRequest("Message body contains text that is not valid Unicode") from exc


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(format(value, "f"))
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def encode(value: Any) -> bytes:
    """JSON bytes; a `Decimal` is written as an exact JSON number."""
    try:
        return orjson.dumps(value, default=_default)
    except (TypeError, orjson.JSONEncodeError):
        # What orjson refuses (integers beyond 64 bits, deep nesting) can only be an echo of
        # hostile input: the standard library writes it, decimals as text.
        return json.dumps(value, default=_decimal_as_text, ensure_ascii=False).encode()


def _decimal_as_text(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


REJECTED_PAYLOAD_LIMIT = 16 * 1024


def payload_for_rejection(raw: bytes) -> Any:
    """The rejected body as JSON when it parses, else as text (cut at 16 KiB)."""
    if len(raw) <= REJECTED_PAYLOAD_LIMIT:
        try:
            payload = orjson.loads(raw)
            orjson.dumps(payload)  # nested too deep or too big to write back: send the text
        except (orjson.JSONDecodeError, orjson.JSONEncodeError):
            pass
        else:
            return payload
    text = raw[:REJECTED_PAYLOAD_LIMIT].decode("utf-8", errors="replace")
    return text if len(raw) <= REJECTED_PAYLOAD_LIMIT else f"{text}... ({len(raw)} bytes)"
