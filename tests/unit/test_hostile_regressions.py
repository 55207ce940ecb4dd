"""Bodies the property-based hostile-input test found, kept as plain regressions."""

from __future__ import annotations

import json
from typing import Any

import pytest

from schemas.commands import PlaceOrder
from schemas.queries import ListStatuses
from service.application.parsing import parse, parse_action
from service.domain.errors import BadRequest, ValidationFailed
from service.logs import redact
from service.wire import decode_object, encode, payload_for_rejection

LIMIT = 256 * 1024


@pytest.mark.parametrize("number", [b"1e5000000", b"1e-5000000", b"-1E1001"])
def test_numbers_no_field_could_hold_are_a_bad_request(number: bytes) -> None:
    with pytest.raises(BadRequest):
        decode_object(b'{"page": ' + number + b"}", limit=LIMIT)


def test_an_integer_beyond_64_bits_can_still_be_written_back() -> None:
    big = 2**64
    assert json.loads(encode({"echo": big})) == {"echo": big}


def test_an_unknown_action_does_not_echo_what_it_was_given() -> None:
    with pytest.raises(Exception) as refused:  # noqa: PT011 - UnknownAction, checked below
        parse_action({"action": 2**64, "id": 1})
    assert getattr(refused.value, "code", None) == "unknown_action"
    assert str(2**64) not in encode(getattr(refused.value, "details", None)).decode()


def test_a_deeply_nested_rejected_body_is_carried_as_text() -> None:
    raw = b'{"a":' * 300 + b"1" + b"}" * 300
    payload = payload_for_rejection(raw)
    assert isinstance(payload, str)
    encode({"payload": payload})


def _place(product_id: Any) -> dict[str, Any]:
    return {
        "customer_id": "c",
        "items": [{"product_id": product_id, "product_name": "x", "quantity": 1, "price": 1}],
        "billing": {"first_name": "a", "last_name": "b", "email": "a@example.com"},
    }


def test_a_product_id_beyond_64_bits_is_a_validation_error() -> None:
    with pytest.raises(ValidationFailed):
        parse(PlaceOrder, _place(2**63))
    assert parse(PlaceOrder, _place(2**63 - 1)).items[0].product_id == 2**63 - 1


def test_a_huge_expected_version_is_a_validation_error() -> None:
    with pytest.raises(ValidationFailed):
        parse_action({"action": "complete", "id": 1, "expected_version": 2**64})


def test_statuses_refuses_unknown_fields() -> None:
    assert parse(ListStatuses, {}) == ListStatuses()
    with pytest.raises(ValidationFailed):
        parse(ListStatuses, {"$where": "1"})


def test_redacting_a_long_line_takes_linear_time() -> None:
    # The old pattern backtracked over the whole scheme at every position: minutes here.
    line = "x" * 200_000 + "://user:secret@host " + "y" * 200_000
    redacted = redact(line)
    assert "secret" not in redacted
    assert redacted.count("*") == 3
