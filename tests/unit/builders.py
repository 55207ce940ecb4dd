"""Small builders for the unit tests: a PlaceOrder body as the wire delivers it, an order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from schemas.commands import OrderAction, OrderActionAdapter, PlaceOrder
from service.application.commands import order_action
from service.application.commands import place_command as domain_place
from service.application.idempotency import action_stamp
from service.domain import commands
from service.domain.idempotency import RequestKey, RequestStamp
from service.domain.order import Order, place

NOW = datetime(2025, 11, 6, 15, 0, tzinfo=UTC)
LATER = NOW + timedelta(hours=1)
ORDER_DB_ID = 3
PUBLIC_ORDER_ID = 421409


def item_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "product_id": 2,
        "product_name": "Window Cleaning",
        "quantity": 2,
        "price": Decimal("75.00"),
    }
    return body | overrides


def place_body(**overrides: Any) -> dict[str, Any]:
    """The ORIGINAL_API example, with numbers as `service.wire.decode_object` reads them."""
    body: dict[str, Any] = {
        "customer_id": "CUST-12345",
        "items": [
            item_body(product_id=1, product_name="Premium Cleaning Service", quantity=1,
                      price=Decimal("150.00"), metadata={"filter_options": [1, 2, 3]}),
            item_body(),
        ],
        "billing": {"first_name": "John", "last_name": "Doe", "email": "john.doe@example.com",
                    "phone": "+31612345678", "address": "123 Main Street", "city": "Amsterdam",
                    "postal_code": "1012AB", "country": "NL"},
        "notes": "Please call before arrival",
        "metadata": {"source": "webform", "campaign_id": "SUMMER2025"},
    }  # fmt: skip
    return body | overrides


def wire_place(**overrides: Any) -> PlaceOrder:
    return PlaceOrder.model_validate(place_body(**overrides))


def place_command(**overrides: Any) -> commands.PlaceOrder:
    """The domain command of a PlaceOrder body, mapped as the application maps it."""
    return domain_place(wire_place(**overrides))


def placed_order(**overrides: Any) -> Order:
    """A freshly placed order (version 1) at NOW; overrides go into the PlaceOrder body."""
    order, _ = place(
        place_command(**overrides),
        id=ORDER_DB_ID,
        order_id=PUBLIC_ORDER_ID,
        now=NOW,
        default_currency="EUR",
    )
    return order


def wire_action(name: str, **fields: Any) -> OrderAction:
    """An OrderAction, as the wire delivers it, for the order built by `placed_order`."""
    return OrderActionAdapter.validate_python({"id": ORDER_DB_ID, "action": name, **fields})


def action(name: str, **fields: Any) -> commands.OrderAction:
    """The domain command of `wire_action(name, **fields)`."""
    return order_action(wire_action(name, **fields))


def stamped(
    name: str, message_id: str | None = None, **fields: Any
) -> tuple[commands.OrderAction, RequestStamp | None]:
    """The domain command of an action and the stamp the application takes of it."""
    wire = wire_action(name, **fields)
    return order_action(wire), action_stamp(wire, message_id)


def request(key: str) -> RequestStamp:
    """The stamp of a request with the caller key `key` (a fixed fingerprint per key)."""
    return RequestStamp(RequestKey(key), f"fingerprint-of-{key}")
