"""What the service puts on the wire matches the published schemas and the contract's fields:
the order view, and the typed domain events as the one adapter renders them."""

from __future__ import annotations

import dataclasses
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel

from schemas.events import (
    OrderCommandRejected,
    OrderMetadataUpdated,
    OrderPlaced,
    OrderStatusChanged,
)
from schemas.orders import OrderView
from service.adapters.events import SCHEMAS, event_body
from service.adapters.views import order_view, timestamp
from service.domain import events
from service.domain.order import Order, decide, place
from tests.unit.builders import LATER, NOW, action, item_body, place_command, placed_order, request

TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")

ORDER_FIELDS = {
    "id", "order_id", "customer_id", "user_id", "items", "billing", "subtotal", "total_tax",
    "total", "currency", "currency_symbol", "status", "notes", "metadata", "version",
    "status_history", "created_at", "updated_at",
}  # fmt: skip
"""The order's fields as CONTRACT.md lists them."""

EVENT_FIELDS = {"event_id", "event_type", "occurred_at"}
STATUS_CHANGED_FIELDS = EVENT_FIELDS | {
    "id", "order_id", "customer_id", "user_id", "from_status", "to_status", "action", "notes",
    "reason", "version",
}  # fmt: skip
METADATA_UPDATED_FIELDS = EVENT_FIELDS | {"id", "order_id", "metadata", "version"}
COMMAND_REJECTED_FIELDS = EVENT_FIELDS | {"routing_key", "error", "payload"}


def _moved(order: Order) -> Order:
    change = decide(order, action("cancel", reason="customer asked"), request("r-1"), LATER)
    assert change is not None
    return change.after


def _same_on_the_wire(model: type[BaseModel], body: dict[str, Any]) -> None:
    """`body` validates against `model` and has no field the model does not publish."""
    parsed = model.model_validate(body)
    assert parsed.model_dump(mode="json", by_alias=True, exclude_unset=True) == body


# -- timestamps ------------------------------------------------------------------------


def test_timestamps_are_utc_with_microseconds_and_z() -> None:
    assert timestamp(NOW) == "2025-11-06T15:00:00.000000Z"
    assert timestamp(datetime(2025, 1, 2, 3, 4, 5, 678, tzinfo=UTC)) == (
        "2025-01-02T03:04:05.000678Z"
    )


def test_a_timestamp_in_another_zone_is_shown_in_utc() -> None:
    amsterdam = timezone(timedelta(hours=1))

    assert timestamp(datetime(2025, 11, 6, 16, 0, tzinfo=amsterdam)) == (
        "2025-11-06T15:00:00.000000Z"
    )


# -- the order view --------------------------------------------------------------------


def test_a_placed_order_view_matches_the_schema_and_the_contract() -> None:
    view = order_view(placed_order())

    _same_on_the_wire(OrderView, view)
    assert set(view) == ORDER_FIELDS


def test_a_changed_order_view_matches_the_schema() -> None:
    view = order_view(_moved(placed_order()))

    _same_on_the_wire(OrderView, view)
    assert view["status_history"][-1] == {
        "from": "pending",
        "to": "cancelled",
        "at": "2025-11-06T16:00:00.000000Z",
        "action": "cancel",
        "notes": None,
        "reason": "customer asked",
    }


def test_the_order_view_reads_like_the_original_api() -> None:
    view = order_view(placed_order())

    assert (view["id"], view["order_id"], view["customer_id"]) == (3, 421409, "CUST-12345")
    assert (view["subtotal"], view["total_tax"], view["total"]) == ("300.00", "0.00", "300.00")
    assert (view["currency"], view["currency_symbol"]) == ("EUR", "€")
    assert view["status"] == "pending"
    assert view["version"] == 1
    assert view["created_at"] == view["updated_at"] == "2025-11-06T15:00:00.000000Z"
    assert view["status_history"] == [
        {
            "from": None,
            "to": "pending",
            "at": "2025-11-06T15:00:00.000000Z",
            "action": "place",
            "notes": "Please call before arrival",
            "reason": None,
        }
    ]
    assert view["billing"]["email"] == "john.doe@example.com"


def test_item_prices_are_two_decimal_strings_and_item_metadata_only_when_given() -> None:
    order = placed_order(items=[item_body(price=Decimal("75.5"), metadata={"size": "L"}),
                                item_body(price=150)])  # fmt: skip

    assert order_view(order)["items"] == [
        {"product_id": 2, "product_name": "Window Cleaning", "quantity": 2, "price": "75.50",
         "metadata": {"size": "L"}},
        {"product_id": 2, "product_name": "Window Cleaning", "quantity": 2, "price": "150.00"},
    ]  # fmt: skip


@pytest.mark.parametrize("field", ["subtotal", "total_tax", "total"])
def test_money_in_the_view_is_a_string_with_two_decimals(field: str) -> None:
    view = order_view(placed_order(total_tax=7, items=[item_body(quantity=3, price="0.1")]))

    assert re.fullmatch(r"\d+\.\d{2}", view[field])


def test_every_timestamp_in_the_view_has_the_contract_format() -> None:
    view = order_view(_moved(placed_order()))

    stamps = [view["created_at"], view["updated_at"], *(e["at"] for e in view["status_history"])]
    assert all(TIMESTAMP.fullmatch(stamp) for stamp in stamps)


# -- event bodies ----------------------------------------------------------------------


def test_order_placed_matches_its_schema() -> None:
    _, event = place(place_command(), id=3, order_id=421409, now=NOW, default_currency="EUR")

    body = event_body(event)
    _same_on_the_wire(OrderPlaced, body)
    assert set(body) == EVENT_FIELDS | {"order"}
    assert body["event_type"] == event.event_type == "order.placed"


def test_order_status_changed_matches_its_schema() -> None:
    change = decide(placed_order(user_id="USER-7"), action("cancel", reason="r"), None, LATER)
    assert change is not None

    body = event_body(change.event)
    _same_on_the_wire(OrderStatusChanged, body)
    assert set(body) == STATUS_CHANGED_FIELDS
    assert body["user_id"] == "USER-7"
    assert body["customer_id"] == "CUST-12345"
    assert (body["from_status"], body["to_status"]) == ("pending", "cancelled")


def test_order_metadata_updated_matches_its_schema() -> None:
    change = decide(placed_order(), action("update_metadata", metadata={"a": 1}), None, LATER)
    assert change is not None

    body = event_body(change.event)
    _same_on_the_wire(OrderMetadataUpdated, body)
    assert set(body) == METADATA_UPDATED_FIELDS


@pytest.mark.parametrize(
    "payload", [{"action": "ship", "id": 3}, "not json", None], ids=["json", "text", "null"]
)
def test_order_command_rejected_matches_its_schema(payload: object) -> None:
    event = events.command_rejected(
        "orders.action",
        code="unknown_action",
        message="Unknown action 'ship'",
        details={"action": "ship"},
        payload=payload,
        now=NOW,
    )

    body = event_body(event)
    _same_on_the_wire(OrderCommandRejected, body)
    assert set(body) == COMMAND_REJECTED_FIELDS
    assert body["error"] == {
        "code": "unknown_action",
        "message": "Unknown action 'ship'",
        "details": {"action": "ship"},
    }
    assert event.event_type == "order.command_rejected"


def test_every_event_has_a_uuid_id_and_a_contract_timestamp() -> None:
    order, placed = place(place_command(), id=3, order_id=421409, now=NOW, default_currency="EUR")
    moved = decide(order, action("update_status", status="processing"), None, LATER)
    meta = decide(order, action("update_metadata", metadata={"a": 1}), None, LATER)
    assert moved is not None
    assert meta is not None
    rejected = events.command_rejected(
        "orders.place", code="bad_request", message="m", details=None, payload="x", now=NOW
    )

    for event in [placed, moved.event, meta.event, rejected]:
        body = event_body(event)
        assert list(body)[:3] == ["event_id", "event_type", "occurred_at"]
        assert body["event_id"] == event.event_id
        assert body["event_type"] == event.event_type
        assert uuid.UUID(event.event_id)
        assert TIMESTAMP.fullmatch(body["occurred_at"])
        assert body["occurred_at"] == timestamp(event.occurred_at)


@pytest.mark.parametrize("event_type", list(SCHEMAS), ids=[e.__name__ for e in SCHEMAS])
def test_each_typed_event_carries_exactly_the_fields_its_schema_publishes(
    event_type: type[events.Event],
) -> None:
    """The schema is the one definition of an event's shape; the typed event fills it, so
    it may hold no field the schema does not publish and lack none it does."""
    schema = SCHEMAS[event_type]
    carried = {field.name for field in dataclasses.fields(event_type)} | {"event_type"}

    assert carried == set(schema.model_fields)
    assert schema.model_fields["event_type"].default == event_type.event_type


def test_every_domain_event_has_a_schema() -> None:
    assert set(SCHEMAS) == {
        cls for cls in vars(events).values()
        if isinstance(cls, type) and issubclass(cls, events.Event) and cls is not events.Event
    }  # fmt: skip
