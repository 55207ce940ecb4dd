"""`place()` and `decide()`: totals, versions, history, the order of checks, metadata."""

from __future__ import annotations

import uuid
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from orders_vocabulary.statuses import OrderStatus
from service.adapters.events import event_body
from service.adapters.views import order_view, timestamp
from service.domain.errors import IdempotencyConflict, InvalidTransition, VersionConflict
from service.domain.idempotency import RequestKey, RequestStamp
from service.domain.order import REMEMBERED_REQUESTS, HistoryEntry, Order, decide, place
from tests.unit.builders import (
    LATER,
    NOW,
    ORDER_DB_ID,
    PUBLIC_ORDER_ID,
    action,
    item_body,
    place_command,
    placed_order,
    request,
    stamped,
)


def _place(**overrides: Any) -> Order:
    order, _ = place(
        place_command(**overrides), id=1, order_id=100001, now=NOW, default_currency="EUR"
    )
    return order


def _with_metadata(metadata: dict[str, Any]) -> Order:
    return placed_order(metadata=metadata)


# -- place -----------------------------------------------------------------------------


def test_place_sums_quantity_times_price_exactly() -> None:
    order = placed_order()  # 1 x 150.00 + 2 x 75.00

    assert order.subtotal == Decimal("300.00")
    assert order.total_tax == Decimal("0.00")
    assert order.total == Decimal("300.00")


def test_place_never_goes_through_a_float() -> None:
    order = _place(items=[item_body(quantity=3, price=Decimal("0.10"))])

    assert order.subtotal == Decimal("0.30")
    assert str(order.subtotal) == "0.30"


def test_place_total_defaults_to_subtotal_plus_tax() -> None:
    order = _place(total_tax=Decimal("63.00"))

    assert (order.subtotal, order.total_tax, order.total) == (
        Decimal("300.00"), Decimal("63.00"), Decimal("363.00")
    )  # fmt: skip


def test_place_keeps_a_given_total() -> None:
    order = _place(total="250.00", total_tax="10.00")

    assert (order.subtotal, order.total_tax, order.total) == (
        Decimal("300.00"), Decimal("10.00"), Decimal("250.00")
    )  # fmt: skip


def test_place_starts_at_version_1_with_a_first_history_entry_from_none() -> None:
    order = placed_order()

    assert order.id == ORDER_DB_ID
    assert order.order_id == PUBLIC_ORDER_ID
    assert order.version == 1
    assert order.status == OrderStatus.PENDING
    assert order.status_history == (
        HistoryEntry(None, OrderStatus.PENDING, NOW, "place", "Please call before arrival"),
    )
    assert order.created_at == order.updated_at == NOW
    assert order.applied_requests == ()


def test_place_with_an_initial_status() -> None:
    order = _place(status="confirmed")

    assert order.status == OrderStatus.CONFIRMED
    assert order.status_history[0].source is None
    assert order.status_history[0].target == OrderStatus.CONFIRMED


def test_place_keeps_what_was_placed() -> None:
    order = placed_order(user_id="USER-7")

    assert order.customer_id == "CUST-12345"
    assert order.user_id == "USER-7"
    assert order.notes == "Please call before arrival"
    assert order.metadata == {"source": "webform", "campaign_id": "SUMMER2025"}
    assert order.billing["email"] == "john.doe@example.com"
    assert [(i.product_id, i.quantity, i.price) for i in order.items] == [
        (1, 1, Decimal("150.00")),
        (2, 2, Decimal("75.00")),
    ]
    assert order.items[0].metadata == {"filter_options": [1, 2, 3]}
    assert order.items[1].metadata is None


def test_place_uses_the_default_currency_when_none_is_given() -> None:
    order = placed_order()

    assert (order.currency, order.currency_symbol) == ("EUR", "€")


@pytest.mark.parametrize(
    ("given", "code", "symbol"),
    [("USD", "USD", "$"), ("gbp", "GBP", "£"), ("EUR", "EUR", "€"), ("CHF", "CHF", "CHF")],
)
def test_place_with_an_explicit_currency_shows_its_symbol(
    given: str, code: str, symbol: str
) -> None:
    order = _place(currency=given)

    assert (order.currency, order.currency_symbol) == (code, symbol)


def test_place_default_currency_is_a_setting() -> None:
    order, _ = place(place_command(), id=1, order_id=100001, now=NOW, default_currency="USD")

    assert (order.currency, order.currency_symbol) == ("USD", "$")


def test_the_placed_event_carries_the_order_view() -> None:
    order, event = place(
        place_command(), id=ORDER_DB_ID, order_id=PUBLIC_ORDER_ID, now=NOW, default_currency="EUR"
    )

    assert event.event_type == "order.placed"
    assert event.occurred_at == NOW
    assert event_body(event) == {
        "event_id": event.event_id,
        "event_type": "order.placed",
        "occurred_at": timestamp(NOW),
        "order": order_view(order),
    }
    assert uuid.UUID(event.event_id)


def test_every_event_has_its_own_id() -> None:
    _, first = place(place_command(), id=1, order_id=100001, now=NOW, default_currency="EUR")
    _, second = place(place_command(), id=1, order_id=100001, now=NOW, default_currency="EUR")

    assert first.event_id != second.event_id


# -- decide: the order of checks -------------------------------------------------------


def test_an_already_applied_request_changes_nothing_even_with_a_wrong_expected_version() -> None:
    order = replace(placed_order(), version=4, applied_requests=(request("r-1"),))

    repeat = action("update_status", status="processing", expected_version=1)

    assert decide(order, repeat, request("r-1"), LATER) is None


def test_an_already_applied_request_wins_over_an_invalid_transition() -> None:
    order = replace(placed_order(status="cancelled"), applied_requests=(request("r-1"),))

    assert decide(order, action("complete"), request("r-1"), LATER) is None


def test_an_expected_version_mismatch_is_a_version_conflict() -> None:
    order = replace(placed_order(), version=4)

    with pytest.raises(VersionConflict) as conflict:
        decide(order, action("update_status", status="processing", expected_version=3), None, LATER)

    assert conflict.value.code == "version_conflict"
    assert conflict.value.details["current_version"] == 4


def test_the_version_is_checked_before_the_transition() -> None:
    order = placed_order(status="cancelled")

    with pytest.raises(VersionConflict):
        decide(order, action("complete", expected_version=2), None, LATER)


def test_a_matching_expected_version_applies_the_action() -> None:
    order = replace(placed_order(), version=4)

    change = decide(
        order, action("update_status", status="processing", expected_version=4), None, LATER
    )

    assert change is not None
    assert change.after.version == 5


def test_an_unapplied_request_key_is_still_checked() -> None:
    order = replace(placed_order(status="cancelled"), applied_requests=(request("r-1"),))

    with pytest.raises(InvalidTransition):
        decide(order, action("complete"), request("r-2"), LATER)


# -- decide: applied requests ----------------------------------------------------------


def test_an_applied_request_is_remembered_and_not_applied_twice() -> None:
    processing, stamp = stamped("update_status", status="processing", request_id="r-1")
    first = decide(placed_order(), processing, stamp, LATER)
    assert first is not None
    assert first.after.applied_requests == (stamp,)
    moved_on = replace(first.after, status=OrderStatus.ON_HOLD)  # it could move again

    assert decide(moved_on, processing, stamp, LATER) is None


def test_an_applied_request_with_another_body_is_an_idempotency_conflict() -> None:
    processing, first_stamp = stamped("update_status", status="processing", request_id="r-1")
    first = decide(placed_order(), processing, first_stamp, LATER)
    assert first is not None
    on_hold, on_hold_stamp = stamped("update_status", status="on_hold", request_id="r-1")

    with pytest.raises(IdempotencyConflict) as conflict:
        decide(first.after, on_hold, on_hold_stamp, LATER)

    assert conflict.value.code == "idempotency_conflict"
    assert conflict.value.details == {"key": "r-1"}


def test_a_request_applied_before_fingerprints_were_kept_replays_whatever_its_body() -> None:
    legacy = RequestStamp(RequestKey("r-1"), None)
    order = replace(placed_order(), version=2, applied_requests=(legacy,))
    cancel, stamp = stamped("cancel", request_id="r-1")

    assert decide(order, cancel, stamp, LATER) is None


def test_a_request_id_and_a_message_id_of_the_same_text_are_different_requests() -> None:
    _, by_message = stamped("update_status", "m-1", status="processing")
    assert by_message is not None
    order = replace(placed_order(), applied_requests=(by_message,))
    cancel, stamp = stamped("cancel", "other", request_id="m-1")

    change = decide(order, cancel, stamp, LATER)

    assert change is not None
    assert change.after.status == OrderStatus.CANCELLED


def test_without_a_request_key_nothing_is_remembered() -> None:
    change = decide(placed_order(), action("update_status", status="processing"), None, LATER)

    assert change is not None
    assert change.request is None
    assert change.after.applied_requests == ()


def test_remembered_requests_are_bounded_and_forget_the_oldest() -> None:
    keys = tuple(request(f"r-{n}") for n in range(REMEMBERED_REQUESTS))
    order = replace(placed_order(), applied_requests=keys)

    change = decide(order, action("update_status", status="processing"), request("r-new"), LATER)

    assert change is not None
    assert len(change.after.applied_requests) == REMEMBERED_REQUESTS
    assert change.after.applied_requests == (*keys[1:], request("r-new"))
    assert request("r-0") not in change.after.applied_requests


def test_a_metadata_update_remembers_its_request_too() -> None:
    change = decide(
        placed_order(), action("update_metadata", metadata={"a": 1}), request("m-1"), LATER
    )

    assert change is not None
    assert change.after.applied_requests == (request("m-1"),)


# -- decide: update_metadata -----------------------------------------------------------


def test_merge_adds_and_overwrites_keys_and_null_removes_one() -> None:
    order = _with_metadata({"source": "webform", "campaign_id": "SUMMER2025", "n": 1})

    change = decide(
        order,
        action("update_metadata", metadata={"campaign_id": None, "n": 2, "channel": "email"}),
        None,
        LATER,
    )

    assert change is not None
    assert change.after.metadata == {"source": "webform", "n": 2, "channel": "email"}


def test_merge_is_the_default_mode() -> None:
    change = decide(
        _with_metadata({"a": 1}), action("update_metadata", metadata={"b": 2}), None, LATER
    )

    assert change is not None
    assert change.after.metadata == {"a": 1, "b": 2}


def test_merge_is_recursive_for_nested_objects() -> None:
    order = _with_metadata({"shipping": {"carrier": "dhl", "tracking": "X1", "slot": "am"}})

    change = decide(
        order,
        action("update_metadata", metadata={"shipping": {"tracking": None, "slot": "pm"}}),
        None,
        LATER,
    )

    assert change is not None
    assert change.after.metadata == {"shipping": {"carrier": "dhl", "slot": "pm"}}


def test_merge_replaces_a_scalar_with_an_object_without_its_nulls() -> None:
    order = _with_metadata({"gift": False})

    change = decide(
        order,
        action("update_metadata", metadata={"gift": {"wrap": True, "card": None}}),
        None,
        LATER,
    )

    assert change is not None
    assert change.after.metadata == {"gift": {"wrap": True}}


def test_merge_replaces_lists_whole() -> None:
    order = _with_metadata({"tags": ["a", "b"]})

    change = decide(order, action("update_metadata", metadata={"tags": ["c"]}), None, LATER)

    assert change is not None
    assert change.after.metadata == {"tags": ["c"]}


def test_replace_sets_the_whole_object() -> None:
    order = _with_metadata({"source": "webform", "campaign_id": "SUMMER2025"})

    change = decide(
        order, action("update_metadata", metadata={"only": 1}, mode="replace"), None, LATER
    )

    assert change is not None
    assert change.after.metadata == {"only": 1}


def test_a_metadata_change_bumps_the_version_and_emits_its_event() -> None:
    order = _with_metadata({"a": 1})

    change = decide(order, action("update_metadata", metadata={"b": 2}), None, LATER)

    assert change is not None
    assert change.before is order
    assert change.after.version == 2
    assert change.after.updated_at == LATER
    assert change.after.status == order.status
    assert change.after.status_history == order.status_history
    assert change.history is None
    body = event_body(change.event)
    assert change.event.event_type == "order.metadata_updated"
    assert body["metadata"] == {"a": 1, "b": 2}
    assert body["version"] == 2
    assert (body["id"], body["order_id"]) == (
        ORDER_DB_ID, PUBLIC_ORDER_ID
    )  # fmt: skip


def test_metadata_update_leaves_the_order_it_was_given_alone() -> None:
    order = _with_metadata({"shipping": {"carrier": "dhl"}})

    decide(order, action("update_metadata", metadata={"shipping": {"carrier": None}}), None, LATER)

    assert order.metadata == {"shipping": {"carrier": "dhl"}}


@pytest.mark.parametrize(
    ("metadata", "patch"),
    [
        ({"a": 1}, {"a": 1}),
        ({"a": 1}, {"gone": None}),
        ({"a": {"b": 1}}, {"a": {"b": 1}}),
        ({"a": 1}, {}),
    ],
    ids=["same-value", "remove-absent-key", "same-nested", "empty-patch"],
)
def test_a_merge_that_changes_nothing_is_a_no_op(
    metadata: dict[str, Any], patch: dict[str, Any]
) -> None:
    order = _with_metadata(metadata)

    assert decide(order, action("update_metadata", metadata=patch), request("m-1"), LATER) is None


def test_a_replace_with_the_same_object_is_a_no_op() -> None:
    order = _with_metadata({"a": 1, "b": [1, 2]})

    no_op = action("update_metadata", metadata={"b": [1, 2], "a": 1}, mode="replace")

    assert decide(order, no_op, None, LATER) is None


def test_metadata_update_checks_the_expected_version() -> None:
    with pytest.raises(VersionConflict):
        decide(
            placed_order(),
            action("update_metadata", metadata={"a": 1}, expected_version=2),
            None,
            LATER,
        )
