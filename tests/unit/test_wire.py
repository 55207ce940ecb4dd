"""Bytes on the wire: strict JSON objects in, exact decimals; Decimal out as a JSON number."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.domain.errors import BadRequest
from service.wire import decode_object, encode, payload_for_rejection

LIMIT = 256 * 1024
"""The contract's message size limit."""


def _nested(depth: int) -> bytes:
    """An object nested `depth` levels deep: {"a":{"a":...{}}}."""
    return b'{"a":' * (depth - 1) + b"{}" + b"}" * (depth - 1)


def _refused(raw: bytes, *, limit: int = LIMIT, allow_empty: bool = False) -> BadRequest:
    with pytest.raises(BadRequest) as refused:
        decode_object(raw, limit=limit, allow_empty=allow_empty)
    assert refused.value.code == "bad_request"
    assert refused.value.message
    return refused.value


def test_a_json_object_is_decoded() -> None:
    body = decode_object(
        b'{"id": 3, "name": "Doe", "tags": ["a"], "ok": true, "x": null}', limit=LIMIT
    )

    assert body == {"id": 3, "name": "Doe", "tags": ["a"], "ok": True, "x": None}
    assert type(body["id"]) is int


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        (b"19.999999999999999999", "19.999999999999999999"),
        (b"75.00", "75.00"),
        (b"0.1", "0.1"),
        (b"1E2", "1E+2"),
        (b"-0.0", "-0.0"),
        (b"123456789012345678901234567890.12", "123456789012345678901234567890.12"),
    ],
)
def test_numbers_with_a_fraction_or_exponent_become_exact_decimals(
    number: bytes, expected: str
) -> None:
    value = decode_object(b'{"v": ' + number + b"}", limit=LIMIT)["v"]

    assert isinstance(value, Decimal)
    assert str(value) == expected


def test_decimals_nested_in_lists_and_objects_are_exact_too() -> None:
    body = decode_object(b'{"items": [{"price": 0.10}, {"price": 0.20}]}', limit=LIMIT)

    assert sum(item["price"] for item in body["items"]) == Decimal("0.30")


def test_unicode_text_is_decoded() -> None:
    body = decode_object('{"name": "Zoë 🚀", "esc": "\\u00e9"}'.encode(), limit=LIMIT)

    assert body == {"name": "Zoë 🚀", "esc": "é"}


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"not json", id="not JSON"),
        pytest.param(b"{", id="truncated"),
        pytest.param(b'{"a": 1,}', id="trailing comma"),
        pytest.param(b"{'a': 1}", id="single quotes"),
        pytest.param(b"[1, 2]", id="array"),
        pytest.param(b'"text"', id="string"),
        pytest.param(b"42", id="number"),
        pytest.param(b"null", id="null"),
        pytest.param(b"true", id="true"),
        pytest.param(b"", id="empty"),
        pytest.param(b"   ", id="blank"),
        pytest.param(b'{"a": "\xff"}', id="invalid UTF-8"),
        pytest.param(b'{"a": "\xc3"}', id="truncated UTF-8"),
        pytest.param('{"a": "é"}'.encode("latin-1"), id="latin-1"),
        pytest.param('{"a": 1}'.encode("utf-16"), id="UTF-16"),
        pytest.param(b'{"a": "\\ud800"}', id="lone surrogate in a value"),
        pytest.param(b'{"\\udfff": 1}', id="lone surrogate in a key"),
        pytest.param(b'{"a": ["\\ud83d"]}', id="lone surrogate in a list"),
        pytest.param(b'{"a": NaN}', id="NaN"),
        pytest.param(b'{"a": Infinity}', id="Infinity"),
        pytest.param(b'{"a": -Infinity}', id="-Infinity"),
        pytest.param(_nested(1000), id="1000 levels of objects"),
        pytest.param(b'{"a":' + b"[" * 1000 + b"]" * 1000 + b"}", id="1000 levels of lists"),
        pytest.param(b"[" * 100_000, id="100000 open brackets"),
        pytest.param(b'{"a": ' + b"1" * 5000 + b"}", id="5000-digit integer"),
    ],
)
def test_what_is_not_a_utf8_json_object_is_a_bad_request(raw: bytes) -> None:
    _refused(raw)


def test_a_surrogate_pair_escape_is_fine() -> None:
    assert decode_object(b'{"a": "\\ud83d\\ude80"}', limit=LIMIT) == {"a": "🚀"}


def test_reasonable_nesting_is_fine() -> None:
    assert decode_object(_nested(16), limit=LIMIT)


def test_a_body_of_exactly_the_limit_is_accepted() -> None:
    raw = b'{"a": "' + b"x" * (LIMIT - 9) + b'"}'
    assert len(raw) == LIMIT

    assert decode_object(raw, limit=LIMIT) == {"a": "x" * (LIMIT - 9)}


def test_a_body_over_the_limit_is_a_bad_request() -> None:
    raw = b'{"a": "' + b"x" * (LIMIT - 8) + b'"}'
    assert len(raw) == LIMIT + 1

    _refused(raw)


def test_the_size_is_checked_before_anything_else() -> None:
    error = _refused(b"\xff" * 100, limit=10)

    assert "limit" in error.message


@pytest.mark.parametrize("raw", [b"", b"  \n\t"], ids=repr)
def test_an_empty_body_is_an_empty_object_only_when_allowed(raw: bytes) -> None:
    assert decode_object(raw, limit=LIMIT, allow_empty=True) == {}
    _refused(raw)


@pytest.mark.parametrize("raw", [b"{}", b'{"a": 1}'])
def test_allow_empty_still_reads_a_body(raw: bytes) -> None:
    assert decode_object(raw, limit=LIMIT, allow_empty=True) == json.loads(raw)


@pytest.mark.parametrize("raw", [b"[]", b"null", b"nope"])
def test_allow_empty_still_refuses_a_non_object(raw: bytes) -> None:
    _refused(raw, allow_empty=True)


# -- encode ----------------------------------------------------------------------------


def test_a_decimal_is_written_as_a_json_number() -> None:
    assert encode({"total": Decimal("2450.00")}) == b'{"total":2450.00}'


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Decimal("0.10"), b"0.10"),
        (Decimal("1E+2"), b"100"),
        (Decimal("123456789012.34"), b"123456789012.34"),
        (Decimal("19.999999999999999999"), b"19.999999999999999999"),
    ],
)
def test_a_decimal_is_written_exactly_without_an_exponent(value: Decimal, text: bytes) -> None:
    assert encode([value]) == b"[" + text + b"]"


def test_encode_writes_compact_utf8_json() -> None:
    body: dict[str, Any] = {
        "success": True, "data": {"symbol": "€", "items": [1, None]}, "message": None
    }  # fmt: skip

    raw = encode(body)

    assert raw == '{"success":true,"data":{"symbol":"€","items":[1,null]},"message":null}'.encode()
    assert json.loads(raw) == body


def test_encode_refuses_what_is_not_json() -> None:
    with pytest.raises(TypeError):
        encode({"when": object()})


@given(st.decimals(min_value=0, max_value=10**12, places=2))
def test_an_amount_goes_over_the_wire_and_back_exactly(amount: Decimal) -> None:
    decoded = decode_object(encode({"amount": amount}), limit=LIMIT)["amount"]

    assert decoded == amount
    assert f"{decoded:f}" == f"{amount:f}"


# -- the payload of order.command_rejected ---------------------------------------------


def test_a_rejected_json_body_is_carried_as_json() -> None:
    assert payload_for_rejection(b'{"action": "ship", "id": 3}') == {"action": "ship", "id": 3}
    assert payload_for_rejection(b"[1, 2]") == [1, 2]


@pytest.mark.parametrize(
    ("raw", "text"),
    [(b"not json", "not json"), (b"{", "{"), (b"caf\xe9", "caf\ufffd")],
    ids=["words", "truncated", "not UTF-8"],
)
def test_a_rejected_body_that_is_not_json_is_carried_as_text(raw: bytes, text: str) -> None:
    assert payload_for_rejection(raw) == text
