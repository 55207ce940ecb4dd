"""List cursors: opaque, tamper-evident and bound to the query that issued them.

A cursor is base64url(payload + tag): the payload is the JSON `[sort value, last _id]` of
the page's last order, the tag a truncated HMAC-SHA256 over the query's scope (filters and
sort) and the payload. A cursor the service did not issue, or issued for another query, fails
the tag check; a payload that passes it is still checked for type and range before it reaches
MongoDB. Every refusal is the same `validation_error`.

The key is `ORDERS_CURSOR_KEY` when set. Unset, it is a random key created once in the
database (collection `service_keys`), so every worker and gateway on that database accepts the
others' cursors, also across restarts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from bson.decimal128 import Decimal128
from pydantic import SecretStr
from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from schemas.queries import ListOrders
from service.domain.errors import ValidationFailed
from service.store.client import Document

KEYS = "service_keys"
CURSOR_KEY_ID = "list-cursor"
KEY_BYTES = 32
TAG_BYTES = 16
DOMAIN = b"orders.list cursor v1\x00"
MAX_ID = 2**63 - 1
MAX_TEXT = 1000

_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


async def cursor_key(db: AsyncDatabase[Document], configured: SecretStr | None) -> bytes:
    """The configured key, or the database's own (created by the first process to ask)."""
    if configured is not None:
        return configured.get_secret_value().encode()
    keys = db[KEYS]
    for _ in range(3):  # two first starts at once: one insert wins, the other reads it
        try:
            doc = await keys.find_one_and_update(
                {"_id": CURSOR_KEY_ID},
                {
                    "$setOnInsert": {
                        "key": secrets.token_bytes(KEY_BYTES),
                        "created_at": datetime.now(UTC),
                    }
                },
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:
            continue
        if doc is not None:
            return bytes(doc["key"])
    raise RuntimeError("could not read or create the cursor key")


class CursorCodec:
    """Issues and checks the cursors of `orders.list`."""

    def __init__(self, key: bytes) -> None:
        if len(key) < KEY_BYTES:
            raise ValueError(f"a cursor key has at least {KEY_BYTES} bytes")
        self._key = key

    def encode(self, query: ListOrders, value: Any, last_id: int) -> str:
        """The cursor continuing after the order with sort `value` and id `last_id`."""
        if isinstance(value, datetime):
            value = value.astimezone(UTC).isoformat()
        elif isinstance(value, Decimal):
            value = str(value)
        payload = json.dumps([value, last_id], separators=(",", ":"), ensure_ascii=False)
        raw = payload.encode()
        return _b64(raw + self._tag(query, raw))

    def decode(self, query: ListOrders) -> tuple[Any, int]:
        """The sort value and id `query.cursor` continues after; a `validation_error` when
        this codec did not issue it for this query (same filters and sort)."""
        try:
            return self._decode(query, query.cursor or "")
        except (ValueError, TypeError, ArithmeticError) as exc:
            raise ValidationFailed(
                [{"loc": ["cursor"], "msg": "not a cursor of this query (same filters and sort)"}],
                "Invalid cursor: use the next_cursor of the previous reply with the same query",
            ) from exc

    def _decode(self, query: ListOrders, text: str) -> tuple[Any, int]:
        if not set(text) <= _ALPHABET:
            raise ValueError("not base64url")
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        if _b64(raw) != text or len(raw) <= TAG_BYTES:
            raise ValueError("not a cursor")
        payload, tag = raw[:-TAG_BYTES], raw[-TAG_BYTES:]
        if not hmac.compare_digest(tag, self._tag(query, payload)):
            raise ValueError("not issued for this query")
        position = json.loads(payload)
        if not isinstance(position, list) or len(position) != 2:
            raise ValueError("not a position")
        value, last_id = position
        return _typed(query.order_by, value), _id(last_id)

    def _tag(self, query: ListOrders, payload: bytes) -> bytes:
        scope = query.model_dump(mode="json", exclude={"page", "per_page", "cursor"})
        signed = DOMAIN + json.dumps(scope, sort_keys=True).encode() + b"\x00" + payload
        return hmac.digest(self._key, signed, hashlib.sha256)[:TAG_BYTES]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _id(value: Any) -> int:
    if type(value) is not int or not 1 <= value <= MAX_ID:
        raise TypeError("not an order id")
    return value


def _typed(order_by: str, value: Any) -> Any:
    """The sort value as MongoDB holds it, or TypeError/ValueError/ArithmeticError."""
    if order_by in {"id", "order_id"}:
        return _id(value)
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise TypeError("not a string")
    if order_by in {"created_at", "updated_at"}:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            raise ValueError("not a UTC time")
        return moment.astimezone(UTC)
    if order_by == "total":
        amount = Decimal(value)
        Decimal128(amount)  # raises when BSON cannot hold it exactly
        if not amount.is_finite():
            raise ValueError("not an amount")
        return amount
    return value
