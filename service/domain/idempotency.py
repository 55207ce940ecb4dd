"""What makes a request idempotent: its key, and the fingerprint of what it asks for.

A request is known by the caller's key (`idempotency_key` of a place, `request_id` of an
action), else by the message id of its delivery. The two are separate namespaces: a
`RequestKey` says which one it is in, so no string a caller sends can name a message id.

The fingerprint is a hash of the parsed command in a canonical form, without the key
itself: a repeat of the key with the same fingerprint is a replay, with another one an
`IdempotencyConflict`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from typing import Any

from pydantic import BaseModel

from schemas.commands import OrderAction, PlaceOrder
from service.domain.errors import IdempotencyConflict

LEGACY_MESSAGE_PREFIX = "amqp-message-id:"
"""How keys derived from a message id were written before the namespaces were separate."""

DECIMAL_TAG = "$decimal"
"""Marks a decimal in the canonical form; metadata keys cannot start with `$`, so no value
of a command can look like one."""


@dataclass(frozen=True)
class RequestKey:
    """The caller's key (`from_message` False) or a delivery's message id (True)."""

    value: str
    from_message: bool = False

    @classmethod
    def legacy(cls, stored: str) -> RequestKey:
        """A key stored as one string before the namespaces were separate: the service
        wrote message ids with a prefix, anything else was the caller's."""
        if stored.startswith(LEGACY_MESSAGE_PREFIX):
            return cls(stored.removeprefix(LEGACY_MESSAGE_PREFIX), from_message=True)
        return cls(stored)


@dataclass(frozen=True)
class RequestStamp:
    """A request's key and fingerprint; a stored one without fingerprint predates them."""

    key: RequestKey
    fingerprint: str | None


PLACE_KEY_FIELDS = frozenset({"idempotency_key"})
ACTION_KEY_FIELDS = frozenset({"request_id", "id", "order_id"})
"""Left out of an action's fingerprint: its key, and which order it names (`id` or
`order_id`): applied requests are remembered per order, so that is the same already."""


def place_stamp(command: PlaceOrder, message_id: str | None) -> RequestStamp | None:
    return _stamp(command, command.idempotency_key, message_id, PLACE_KEY_FIELDS)


def action_stamp(action: OrderAction, message_id: str | None) -> RequestStamp | None:
    return _stamp(action, action.request_id, message_id, ACTION_KEY_FIELDS)


def _stamp(
    command: BaseModel, own_key: str | None, message_id: str | None, without: frozenset[str]
) -> RequestStamp | None:
    """A request's stamp: by its own key, else by its message id, else it has none."""
    if own_key is not None:
        key = RequestKey(own_key)
    elif message_id is not None:
        key = RequestKey(message_id, from_message=True)
    else:
        return None
    return RequestStamp(key, fingerprint(command, without=without))


def is_repeat(request: RequestStamp, seen: RequestStamp | None) -> bool:
    """Whether `request` was handled before as `seen` (a replay), False when its key is
    new; `IdempotencyConflict` when the key was used for a different body. A stored key
    without a fingerprint (from before fingerprints were kept) replays as it always did."""
    if seen is None:
        return False
    if seen.key != request.key:
        raise ValueError("compared requests of different keys")
    if seen.fingerprint is not None and seen.fingerprint != request.fingerprint:
        raise IdempotencyConflict(request.key.value, from_message=request.key.from_message)
    return True


def find(stamps: Iterable[RequestStamp], key: RequestKey) -> RequestStamp | None:
    """The stamp of `key` among `stamps`, if any."""
    return next((stamp for stamp in stamps if stamp.key == key), None)


def fingerprint(command: BaseModel, *, without: frozenset[str]) -> str:
    """A hash of `command` in canonical JSON (sorted keys, decimals normalised, defaults
    filled in), leaving out the fields in `without` (the key itself)."""
    canonical = json.dumps(
        _canonical(command.model_dump(exclude=set(without))),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


_PLAIN = frozenset({str, int, bool, float, type(None)})


def _canonical(value: Any) -> Any:
    """`value` with decimals tagged and enums as their values. Plain JSON types come first,
    by exact type: a large metadata object is mostly those."""
    if type(value) in _PLAIN:
        return value
    if isinstance(value, dict | Mapping):
        return {str(key): _canonical(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(item) for item in value]
    if isinstance(value, Decimal):
        return {DECIMAL_TAG: "0" if value.is_zero() else format(value.normalize(), "f")}
    if isinstance(value, Enum):
        return _canonical(value.value)
    if isinstance(value, str | int | float):
        return value
    raise TypeError(f"{type(value).__name__} has no canonical form")
