"""The stamp of a request: its key, and the fingerprint of the wire command it carries.

The fingerprint is a hash of the parsed command in canonical form, without the key itself
(nor, for an action, which order it names); the domain compares stamps
(service/domain/idempotency.py), this is where they are taken.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from decimal import Decimal
from enum import Enum
from typing import Any

from pydantic import BaseModel

from schemas.commands import OrderAction, PlaceOrder
from service.domain.idempotency import RequestKey, RequestStamp

DECIMAL_TAG = "$decimal"
"""Marks a decimal in the canonical form; metadata keys cannot start with `$`, so no value
of a command can look like one."""


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


def fingerprint(command: BaseModel, *, without: frozenset[str]) -> str:
    """A hash of `command` in canonical JSON (sorted keys, decimals normalised, defaults
    filled in), leaving out the fields in `without` (the key itself). The encoder walks the
    plain JSON values itself and asks `_tagged` for the rest only."""
    canonical = json.dumps(
        command.model_dump(exclude=set(without)),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=_tagged,
    )
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def _tagged(value: Any) -> Any:
    """What JSON has no value for, in the canonical form: a decimal tagged, an enum by its
    value (a `str` or `int` enum the encoder writes as its value already), any other
    mapping as a dict."""
    if isinstance(value, Decimal):
        return {DECIMAL_TAG: "0" if value.is_zero() else format(value.normalize(), "f")}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} has no canonical form")
