"""The whole transition table, every from x to pair, against the table in CONTRACT.md.

The expected table is written out here from the contract, not imported from the code.
"""

from __future__ import annotations

import pytest

from orders_vocabulary.statuses import OrderStatus
from service.adapters.events import event_body
from service.domain.errors import InvalidTransition
from service.domain.order import Change, HistoryEntry, decide
from service.domain.statuses import TRANSITIONS
from tests.unit.builders import (
    LATER,
    ORDER_DB_ID,
    PUBLIC_ORDER_ID,
    action,
    placed_order,
    request,
)

STATUSES = [
    "pending", "processing", "confirmed", "in_progress",
    "completed", "cancelled", "refunded", "on_hold",
]  # fmt: skip
"""In the order `orders.statuses` returns them."""

ALLOWED: dict[str, list[str]] = {
    "pending": ["processing", "confirmed", "in_progress", "on_hold", "cancelled"],
    "processing": ["confirmed", "in_progress", "completed", "on_hold", "cancelled"],
    "confirmed": ["processing", "in_progress", "completed", "on_hold", "cancelled"],
    "in_progress": ["completed", "on_hold", "cancelled"],
    "on_hold": ["pending", "processing", "confirmed", "in_progress", "cancelled"],
    "completed": ["refunded"],
    "cancelled": [],
    "refunded": [],
}

ALL_PAIRS = [(source, target) for source in STATUSES for target in STATUSES]
MOVES = [(s, t) for s, t in ALL_PAIRS if t in ALLOWED[s]]
STAYS = [(s, t) for s, t in ALL_PAIRS if s == t]
REFUSALS = [(s, t) for s, t in ALL_PAIRS if s != t and t not in ALLOWED[s]]


def _pair_id(pair: tuple[str, str]) -> str:
    return f"{pair[0]}->{pair[1]}"


def _moved(source: str, target: str, change: Change | None, action_name: str) -> Change:
    """Assert the common shape of an applied status change and return it."""
    assert change is not None
    before, after = change.before, change.after
    assert before.status == source
    assert after.status == target
    assert after.version == before.version + 1
    assert after.updated_at == LATER
    assert after.created_at == before.created_at
    assert len(after.status_history) == len(before.status_history) + 1
    assert after.status_history[:-1] == before.status_history
    assert change.history == after.status_history[-1]
    assert change.event.event_type == "order.status_changed"
    body = event_body(change.event)
    assert body["event_type"] == "order.status_changed"
    assert (body["id"], body["order_id"]) == (ORDER_DB_ID, PUBLIC_ORDER_ID)
    assert (body["from_status"], body["to_status"]) == (source, target)
    assert body["action"] == action_name
    assert body["version"] == after.version
    return change


def test_the_pairs_cover_the_table_exactly_once() -> None:
    assert len(ALL_PAIRS) == 64
    assert sorted(MOVES + STAYS + REFUSALS) == sorted(ALL_PAIRS)
    assert (len(MOVES), len(STAYS), len(REFUSALS)) == (24, 8, 32)


def test_statuses_are_the_contracts_eight_in_its_order() -> None:
    assert [str(status) for status in OrderStatus] == STATUSES


def test_the_domain_table_is_the_contracts_table() -> None:
    assert {str(s): [str(t) for t in targets] for s, targets in TRANSITIONS.items()} == ALLOWED


@pytest.mark.parametrize(("source", "target"), MOVES, ids=_pair_id)
def test_update_status_moves_along_an_allowed_edge(source: str, target: str) -> None:
    order = placed_order(status=source)

    change = decide(
        order, action("update_status", status=target, notes="by phone"), request("r-1"), LATER
    )

    change = _moved(source, target, change, "update_status")
    assert change.history == HistoryEntry(
        OrderStatus(source), OrderStatus(target), LATER, "update_status", "by phone", None
    )
    assert event_body(change.event)["notes"] == "by phone"
    assert event_body(change.event)["reason"] is None
    assert change.request == request("r-1")
    assert change.after.applied_requests == (request("r-1"),)


@pytest.mark.parametrize(("source", "target"), STAYS, ids=_pair_id)
def test_update_status_to_the_current_status_changes_nothing(source: str, target: str) -> None:
    order = placed_order(status=source)

    assert decide(order, action("update_status", status=target), request("r-1"), LATER) is None


@pytest.mark.parametrize(("source", "target"), REFUSALS, ids=_pair_id)
def test_update_status_off_the_table_is_an_invalid_transition(source: str, target: str) -> None:
    order = placed_order(status=source)

    with pytest.raises(InvalidTransition) as refused:
        decide(order, action("update_status", status=target), request("r-1"), LATER)

    assert refused.value.code == "invalid_transition"
    assert refused.value.details == {"from": source, "to": target, "allowed": ALLOWED[source]}


@pytest.mark.parametrize("source", STATUSES)
def test_cancel_follows_the_same_table(source: str) -> None:
    order = placed_order(status=source)
    cancel = action("cancel", reason="customer asked", notes="refund by card")

    if source == "cancelled":
        assert decide(order, cancel, None, LATER) is None
    elif "cancelled" in ALLOWED[source]:
        change = _moved(source, "cancelled", decide(order, cancel, None, LATER), "cancel")
        assert change.history == HistoryEntry(
            OrderStatus(source), OrderStatus.CANCELLED, LATER, "cancel",
            "refund by card", "customer asked",
        )  # fmt: skip
        assert event_body(change.event)["reason"] == "customer asked"
        assert event_body(change.event)["notes"] == "refund by card"
    else:
        with pytest.raises(InvalidTransition) as refused:
            decide(order, cancel, None, LATER)
        assert refused.value.details == {
            "from": source, "to": "cancelled", "allowed": ALLOWED[source]
        }  # fmt: skip


@pytest.mark.parametrize("source", STATUSES)
def test_complete_follows_the_same_table(source: str) -> None:
    order = placed_order(status=source)
    complete = action("complete", notes="signed off")

    if source == "completed":
        assert decide(order, complete, None, LATER) is None
    elif "completed" in ALLOWED[source]:
        change = _moved(source, "completed", decide(order, complete, None, LATER), "complete")
        assert change.history == HistoryEntry(
            OrderStatus(source), OrderStatus.COMPLETED, LATER, "complete", "signed off", None
        )
    else:
        with pytest.raises(InvalidTransition) as refused:
            decide(order, complete, None, LATER)
        assert refused.value.details == {
            "from": source, "to": "completed", "allowed": ALLOWED[source]
        }  # fmt: skip


def test_a_chain_of_moves_keeps_the_whole_history_oldest_first() -> None:
    order = placed_order()
    for target in ["processing", "on_hold", "confirmed", "completed", "refunded"]:
        change = decide(order, action("update_status", status=target), None, LATER)
        assert change is not None
        order = change.after

    assert order.version == 6
    assert [(entry.source, entry.target) for entry in order.status_history] == [
        (None, "pending"),
        ("pending", "processing"),
        ("processing", "on_hold"),
        ("on_hold", "confirmed"),
        ("confirmed", "completed"),
        ("completed", "refunded"),
    ]
