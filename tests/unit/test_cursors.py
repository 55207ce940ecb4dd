"""List cursors: what the service issued round-trips; anything else is a validation_error."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.queries import ListOrders
from service.domain.errors import ValidationFailed
from service.store.cursors import DOMAIN, TAG_BYTES, CursorCodec

KEY = b"unit tests: the list cursor key!"
CODEC = CursorCodec(KEY)
TOTAL = ListOrders(order_by="total", order_direction="asc", cursor="")

SORT_VALUES: list[tuple[str, Any]] = [
    ("created_at", datetime(2025, 11, 6, 15, 0, 0, 123000, tzinfo=UTC)),
    ("updated_at", datetime(1970, 1, 1, tzinfo=UTC)),
    ("total", Decimal("300.00")),
    ("total", Decimal("0")),
    ("total", Decimal("9999999999999999999999999999.999999")),  # 34 digits: Decimal128's most
    ("order_id", 421409123),
    ("id", 2**62),
    ("status", "on_hold"),
    ("customer_id", "CUST-Ærø-😀-" + "x" * 110),  # 128 characters, not all ASCII
]


def _query(order_by: str, cursor: str = "", **filters: Any) -> ListOrders:
    return ListOrders.model_validate({"order_by": order_by, "cursor": cursor} | filters)


def _signed(query: ListOrders, payload: bytes, key: bytes = KEY) -> str:
    """A cursor over any payload with a valid tag: what only a holder of the key can make."""
    scope = query.model_dump(mode="json", exclude={"page", "per_page", "cursor"})
    signed = DOMAIN + json.dumps(scope, sort_keys=True).encode() + b"\x00" + payload
    tag = hmac.digest(key, signed, hashlib.sha256)[:TAG_BYTES]
    return base64.urlsafe_b64encode(payload + tag).decode().rstrip("=")


def _refused(query: ListOrders, cursor: str) -> None:
    with pytest.raises(ValidationFailed) as refusal:
        CODEC.decode(query.model_copy(update={"cursor": cursor}))
    assert refusal.value.code == "validation_error"
    assert refusal.value.details == [
        {"loc": ["cursor"], "msg": "not a cursor of this query (same filters and sort)"}
    ]


@pytest.mark.parametrize(("order_by", "value"), SORT_VALUES)
@pytest.mark.parametrize("direction", ["asc", "desc"])
def test_an_issued_cursor_round_trips(order_by: str, value: Any, direction: str) -> None:
    query = _query(order_by, order_direction=direction, customer_id="CUST-1", status=["processing"])
    cursor = CODEC.encode(query, value, 42)
    assert len(cursor) <= 1000  # what ListOrders accepts
    decoded = CODEC.decode(query.model_copy(update={"cursor": cursor, "per_page": 7}))
    assert decoded == (value, 42)
    assert type(decoded[0]) is type(value)


def test_a_time_in_another_offset_comes_back_as_the_same_utc_instant() -> None:
    moment = datetime(2025, 11, 6, 17, 0, tzinfo=timezone(timedelta(hours=2)))
    cursor = CODEC.encode(_query("created_at"), moment, 1)
    value, _ = CODEC.decode(_query("created_at", cursor))
    assert (value, value.tzinfo) == (moment, UTC)


def test_the_repro_cursor_is_refused() -> None:
    # ["ar-6DgblJNR1","1e9999",1]: the old unsigned format, with a total BSON cannot hold.
    _refused(TOTAL, "WyJhci02RGdibEpOUjEiLCIxZTk5OTkiLDFd")


def test_a_cursor_of_another_query_or_another_key_is_refused() -> None:
    cursor = CODEC.encode(TOTAL, Decimal("10.00"), 3)
    _refused(TOTAL.model_copy(update={"order_direction": "desc"}), cursor)
    _refused(TOTAL.model_copy(update={"customer_id": "CUST-2"}), cursor)
    _refused(TOTAL.model_copy(update={"order_by": "created_at"}), cursor)
    with pytest.raises(ValidationFailed):
        CursorCodec(b"another key, just as long as KEY").decode(
            TOTAL.model_copy(update={"cursor": cursor})
        )


def test_every_changed_character_is_refused() -> None:
    cursor = CODEC.encode(TOTAL, Decimal("10.00"), 3)
    for index, char in enumerate(cursor):
        for other in {"A", "a", "-", "_"} - {char}:
            _refused(TOTAL, cursor[:index] + other + cursor[index + 1 :])
    _refused(TOTAL, cursor[:-1])
    _refused(TOTAL, cursor + "A")


@pytest.mark.parametrize(
    ("order_by", "payload"),
    [
        ("total", b'["1e9999",1]'),  # more than Decimal128 holds
        ("total", b'["1.0000000000000000000000000000000001",1]'),  # 35 digits
        ("total", b'["NaN",1]'),
        ("total", b'["-Infinity",1]'),
        ("total", b'["ten",1]'),
        ("total", b"[10,1]"),
        ("created_at", b'["2025-11-06T15:00:00",1]'),  # no offset
        ("created_at", b'["yesterday",1]'),
        ("created_at", b'["99999-01-01T00:00:00+00:00",1]'),
        ("id", b"[1e400,1]"),
        ("id", b"[true,1]"),
        ("order_id", b'["421409",1]'),
        ("order_id", b"[99999999999999999999999,1]"),  # beyond int64
        ("status", b"[null,1]"),
        ("customer_id", b'[["a"],1]'),
        ("status", b'["paid",0]'),  # no order has id 0
        ("status", b'["paid",-1]'),
        ("status", b'["paid",9223372036854775808]'),
        ("status", b'["paid",1.5]'),
        ("status", b'["paid"]'),
        ("status", b'["paid",1,2]'),
        ("status", b'{"paid":1}'),
        ("status", b"not json"),
        ("status", b"\xff\xfe"),
    ],
)
def test_a_signed_payload_of_the_wrong_shape_is_refused(order_by: str, payload: bytes) -> None:
    query = _query(order_by)
    _refused(query, _signed(query, payload))


def test_the_signing_helper_matches_the_codec() -> None:
    """So the test above signs as the service does: the refusals are the payloads'."""
    query = _query("status")
    assert CODEC.decode(query.model_copy(update={"cursor": _signed(query, b'["paid",7]')})) == (
        "paid",
        7,
    )


def test_a_short_key_is_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        CursorCodec(b"too short")


SORTS = st.sampled_from(["created_at", "updated_at", "total", "order_id", "id", "status"])
BASE64ISH = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/ .\n",
    max_size=1000,
)


@settings(max_examples=1500, deadline=None)
@given(order_by=SORTS, text=st.one_of(st.text(max_size=1000), BASE64ISH))
def test_arbitrary_text_is_refused_with_a_validation_error_only(order_by: str, text: str) -> None:
    query = _query(order_by, text)
    try:
        CODEC.decode(query)
    except ValidationFailed:
        return
    pytest.fail(f"decoded a cursor the codec never issued: {text!r}")


@settings(max_examples=1500, deadline=None)
@given(order_by=SORTS, payload=st.binary(max_size=700))
def test_arbitrary_signed_bytes_decode_or_are_a_validation_error(
    order_by: str, payload: bytes
) -> None:
    """Even a payload carrying a valid tag (a leaked key) never raises anything else."""
    query = _query(order_by)
    with contextlib.suppress(ValidationFailed):
        CODEC.decode(query.model_copy(update={"cursor": _signed(query, payload)}))


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=40)
    | st.sampled_from(["1e9999", "NaN", "2025-11-06T15:00:00+00:00", "9" * 40, "-0"]),
    lambda inner: st.lists(inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=1500, deadline=None)
@given(order_by=SORTS, value=JSON_VALUES, last_id=JSON_VALUES)
def test_signed_json_positions_decode_to_bson_ready_values_or_are_refused(
    order_by: str, value: Any, last_id: Any
) -> None:
    query = _query(order_by)
    payload = json.dumps([value, last_id]).encode()
    try:
        decoded, decoded_id = CODEC.decode(
            query.model_copy(update={"cursor": _signed(query, payload)})
        )
    except ValidationFailed:
        return
    assert type(decoded_id) is int
    assert 1 <= decoded_id < 2**63
    expected = {
        "created_at": datetime,
        "updated_at": datetime,
        "total": Decimal,
        "order_id": int,
        "id": int,
        "status": str,
    }[order_by]
    assert type(decoded) is expected
