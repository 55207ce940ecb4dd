"""Request stamps: the canonical fingerprint of a command, the two key namespaces, replays."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from schemas.commands import OrderActionAdapter, PlaceOrder
from service.application.idempotency import action_stamp, place_stamp
from service.domain.errors import IdempotencyConflict
from service.domain.idempotency import RequestKey, RequestStamp, is_repeat
from service.wire import decode_object
from tests.unit.builders import item_body, place_body

LIMIT = 256 * 1024


def _place(**overrides: Any) -> PlaceOrder:
    return PlaceOrder.model_validate(place_body(**overrides))


def _fingerprint_of_place(command: PlaceOrder) -> str | None:
    stamp = place_stamp(command, "m-1")
    assert stamp is not None
    return stamp.fingerprint


def _fingerprint_of_action(body: dict[str, Any]) -> str | None:
    stamp = action_stamp(OrderActionAdapter.validate_python(body), "m-1")
    assert stamp is not None
    return stamp.fingerprint


# -- the canonical fingerprint -------------------------------------------------------------


def test_the_same_command_spelt_differently_on_the_wire_has_one_fingerprint() -> None:
    one = b"""{"customer_id": "C-1", "billing": {"first_name": "A", "last_name": "B",
        "email": "a@example.com"}, "items": [{"product_id": 1, "product_name": "X",
        "quantity": 2, "price": 75}], "metadata": {"a": 1, "b": {"c": 2.50}}}"""
    other = b"""{"metadata": {"b": {"c": 2.5}, "a": 1}, "status": "pending",
        "items": [{"price": "75.00", "quantity": 2, "product_name": " X ", "product_id": 1}],
        "billing": {"email": "a@example.com", "last_name": "B", "first_name": "A"},
        "customer_id": "C-1", "notes": null}"""
    commands = [PlaceOrder.model_validate(decode_object(raw, limit=LIMIT)) for raw in (one, other)]

    assert _fingerprint_of_place(commands[0]) == _fingerprint_of_place(commands[1])


def test_the_key_itself_is_not_part_of_the_fingerprint() -> None:
    assert _fingerprint_of_place(_place(idempotency_key="k-1")) == _fingerprint_of_place(
        _place(idempotency_key="k-2")
    )
    assert _fingerprint_of_place(_place(idempotency_key="k-1")) == _fingerprint_of_place(_place())


@pytest.mark.parametrize(
    "change",
    [
        {"customer_id": "CUST-OTHER"},
        {"items": [item_body(price=Decimal("75.01"))]},
        {"items": [item_body(quantity=3)]},
        {"items": [item_body(product_id="2")]},  # a string is not the integer
        {"billing": {"first_name": "Jane", "last_name": "Doe", "email": "jane@example.com"}},
        {"total": Decimal("1.00")},
        {"status": "on_hold"},
        {"metadata": {"source": "webform", "campaign_id": "SUMMER2026"}},
        {"metadata": {"n": Decimal("1.5")}},
        {"currency": "USD"},
    ],
    ids=lambda change: next(iter(change)),
)
def test_any_other_field_value_is_another_fingerprint(change: dict[str, Any]) -> None:
    assert _fingerprint_of_place(_place(**change)) != _fingerprint_of_place(_place())


def test_a_decimal_and_its_text_in_metadata_are_different_values() -> None:
    number = _place(metadata={"n": Decimal("1.5")})
    text = _place(metadata={"n": "1.5"})

    assert _fingerprint_of_place(number) != _fingerprint_of_place(text)


def test_decimals_compare_by_value() -> None:
    assert _fingerprint_of_place(_place(metadata={"n": Decimal("1E+2")})) == (
        _fingerprint_of_place(_place(metadata={"n": Decimal("100.000")}))
    )
    assert _fingerprint_of_place(_place(metadata={"n": Decimal("-0.0")})) == (
        _fingerprint_of_place(_place(metadata={"n": Decimal("0")}))
    )


def test_an_action_fingerprint_leaves_out_its_key_and_how_it_names_the_order() -> None:
    by_id = {"id": 3, "action": "cancel", "reason": "asked", "request_id": "r-1"}
    by_number = {"order_id": 421409, "action": "cancel", "reason": "asked", "request_id": "r-2"}

    assert _fingerprint_of_action(by_id) == _fingerprint_of_action(by_number)


@pytest.mark.parametrize(
    "other",
    [
        {"id": 3, "action": "cancel", "reason": "asked again"},
        {"id": 3, "action": "cancel", "reason": "asked", "expected_version": 2},
        {"id": 3, "action": "update_status", "status": "cancelled", "notes": None},
        {"id": 3, "action": "complete"},
    ],
    ids=["reason", "expected_version", "update_status", "complete"],
)
def test_an_action_with_other_fields_has_another_fingerprint(other: dict[str, Any]) -> None:
    base = {"id": 3, "action": "cancel", "reason": "asked"}

    assert _fingerprint_of_action(other) != _fingerprint_of_action(base)


def test_merge_and_the_default_mode_are_the_same_metadata_update() -> None:
    default = {"id": 3, "action": "update_metadata", "metadata": {"a": 1}}

    assert _fingerprint_of_action(default) == _fingerprint_of_action(default | {"mode": "merge"})
    assert _fingerprint_of_action(default) != _fingerprint_of_action(default | {"mode": "replace"})


# -- keys: two namespaces ------------------------------------------------------------------


def test_a_caller_key_never_names_a_message_id() -> None:
    caller = place_stamp(_place(idempotency_key="amqp-message-id:m-1"), None)
    message = place_stamp(_place(), "m-1")
    same_text = place_stamp(_place(), "amqp-message-id:m-1")

    assert caller is not None
    assert message is not None
    assert same_text is not None
    assert caller.key == RequestKey("amqp-message-id:m-1")
    assert message.key == RequestKey("m-1", from_message=True)
    assert len({caller.key, message.key, same_text.key}) == 3


def test_the_caller_key_wins_over_the_message_id_and_none_without_either() -> None:
    stamp = place_stamp(_place(idempotency_key="k-1"), "m-1")

    assert stamp is not None
    assert stamp.key == RequestKey("k-1")
    assert place_stamp(_place(), None) is None


def test_keys_stored_as_one_string_are_read_in_their_namespace() -> None:
    assert RequestKey.legacy("amqp-message-id:m-1") == RequestKey("m-1", from_message=True)
    assert RequestKey.legacy("webform-7") == RequestKey("webform-7")


# -- replay or conflict --------------------------------------------------------------------


def test_a_repeat_with_the_same_fingerprint_is_a_replay() -> None:
    stamp = RequestStamp(RequestKey("k-1"), "f-1")

    assert is_repeat(stamp, None) is False
    assert is_repeat(stamp, RequestStamp(RequestKey("k-1"), "f-1")) is True


def test_a_repeat_with_another_fingerprint_is_a_conflict_naming_the_key() -> None:
    with pytest.raises(IdempotencyConflict) as conflict:
        is_repeat(
            RequestStamp(RequestKey("m-9", True), "f-2"),
            RequestStamp(RequestKey("m-9", True), "f-1"),
        )

    assert conflict.value.code == "idempotency_conflict"
    assert conflict.value.details == {"key": "m-9"}
    assert "Message id 'm-9'" in conflict.value.message


def test_a_key_stored_without_a_fingerprint_replays_as_before() -> None:
    stored = RequestStamp(RequestKey("k-1"), None)

    assert is_repeat(RequestStamp(RequestKey("k-1"), "anything"), stored) is True


def test_fingerprints_are_those_stored_by_earlier_versions() -> None:
    """Orders keep the fingerprints of the requests that changed them: a redelivery after an
    upgrade must still match (these values were taken with the earlier encoder, which
    built the canonical form in Python before encoding it)."""
    place = _place(
        metadata={
            "n": Decimal("1.50"),
            "s": "x",
            "l": [1, 2.5, True, None],
            "d": {"z": 1, "a": "é"},
        },
        items=[item_body(price=Decimal("75.10")), item_body(product_id="2", quantity=3)],
    )
    assert _fingerprint_of_place(place) == (
        "157f41150a624583f2839b176698bf90e95a5d9f987bcaeea20d955e825a774f"
    )
    assert (
        _fingerprint_of_action(
            {"id": 1, "action": "update_status", "status": "processing", "notes": "n"}
        )
        == "ce34ac0e1811523439ddf7db18470c0e80a67ce79ea7b041118d4de1c385fbd2"
    )
    assert (
        _fingerprint_of_action(
            {"id": 1, "action": "update_metadata", "metadata": {"gift": True, "n": 2.5}}
        )
        == "a6751737b35709517d38e4cde0477e2cf66afd0a2014c24110f52dcce047a7c0"
    )
