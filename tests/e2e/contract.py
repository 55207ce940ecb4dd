"""What CONTRACT.md promises, written down independently of the service, plus small helpers."""

from __future__ import annotations

import copy
import json
import re
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

from .amqp_client import AmqpClient, JSONObject

STATUSES = [
    "pending",
    "processing",
    "confirmed",
    "in_progress",
    "completed",
    "cancelled",
    "refunded",
    "on_hold",
]

TRANSITIONS: dict[str, set[str]] = {
    "pending": {"processing", "confirmed", "in_progress", "on_hold", "cancelled"},
    "processing": {"confirmed", "in_progress", "completed", "on_hold", "cancelled"},
    "confirmed": {"processing", "in_progress", "completed", "on_hold", "cancelled"},
    "in_progress": {"completed", "on_hold", "cancelled"},
    "on_hold": {"pending", "processing", "confirmed", "in_progress", "cancelled"},
    "completed": {"refunded"},
    "cancelled": set(),
    "refunded": set(),
}

TIMESTAMP_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")

STATUS_CHANGED_FIELDS = {
    "event_id",
    "event_type",
    "occurred_at",
    "id",
    "order_id",
    "customer_id",
    "user_id",
    "from_status",
    "to_status",
    "action",
    "notes",
    "reason",
    "version",
}

# The "Place New Order" request example of the original HTTP API, verbatim.
EXAMPLE_ORDER: JSONObject = json.loads(
    (Path(__file__).resolve().parents[2] / "docs" / "example-order.json").read_text()
)
"""The documented example order (docs/http-api.md, ORIGINAL_API.txt), shared with the bench."""

_DIGITS_TO_LETTERS = str.maketrans("0123456789", "ghijklmnop")


def new_customer_id() -> str:
    """A unique customer id without digits, so a numeric search can only hit id/order_id."""
    return "cust-" + uuid.uuid4().hex.translate(_DIGITS_TO_LETTERS)


def example_order(customer_id: str) -> JSONObject:
    order = copy.deepcopy(EXAMPLE_ORDER)
    order["customer_id"] = customer_id
    return order


def simple_order(
    customer_id: str,
    *,
    price: str = "10.00",
    quantity: int = 1,
    email: str = "jane.roe@example.com",
    **extra: Any,
) -> JSONObject:
    """A minimal valid PlaceOrder body (no phone, so no digits in the searchable text)."""
    return {
        "customer_id": customer_id,
        "items": [
            {"product_id": "sku-a", "product_name": "Thing", "quantity": quantity, "price": price}
        ],
        "billing": {"first_name": "Jane", "last_name": "Roe", "email": email},
        **extra,
    }


def money(value: str) -> Decimal:
    return Decimal(value)


def assert_money(value: object, expected: Decimal | str) -> None:
    """Money is shown as a string with exactly two decimals."""
    assert isinstance(value, str), f"money must be a string, got {value!r}"
    assert re.fullmatch(r"-?\d+\.\d\d", value), f"money must have two decimals: {value!r}"
    assert Decimal(value) == Decimal(expected), f"{value!r} != {expected}"


def assert_json_number(value: object, expected: Decimal | str | int) -> None:
    """Stats amounts are JSON numbers (not strings), rounded to two decimals."""
    assert isinstance(value, int | Decimal), f"expected a JSON number, got {value!r}"
    assert not isinstance(value, bool), f"expected a JSON number, got {value!r}"
    number = Decimal(value)
    assert number == number.quantize(Decimal("0.01")), f"more than two decimals: {value!r}"
    assert number == Decimal(expected), f"{value!r} != {expected}"


def assert_success(reply: JSONObject) -> Any:
    assert reply.get("success") is True, f"expected success, got {reply!r}"
    return reply["data"]


def assert_error(reply: JSONObject, code: str) -> JSONObject:
    """An error envelope with the given code; the message is for humans and leaks nothing."""
    assert reply.get("success") is False, f"expected an error {code!r}, got {reply!r}"
    error = reply.get("error")
    assert isinstance(error, dict), f"error must be an object: {reply!r}"
    assert error.get("code") == code, f"expected {code!r}, got {reply!r}"
    message = reply.get("message")
    assert isinstance(message, str), f"message must be text: {reply!r}"
    assert message.strip(), f"message must not be empty: {reply!r}"
    for leak in ("Traceback", "mongodb://", "amqp://", 'File "'):
        assert leak not in message, f"message leaks internals: {message!r}"
    return error


def assert_validation_error(reply: JSONObject, *, loc_contains: str | None = None) -> list[Any]:
    error = assert_error(reply, "validation_error")
    details = error.get("details")
    assert isinstance(details, list), f"details must be a list: {error!r}"
    assert details, f"details must not be empty: {error!r}"
    for detail in details:
        assert isinstance(detail, dict), detail
        assert isinstance(detail.get("loc"), list), detail
        assert isinstance(detail.get("msg"), str), detail
    if loc_contains is not None:
        locs = [[str(part) for part in detail["loc"]] for detail in details]
        assert any(loc_contains in loc for loc in locs), (
            f"no detail located at {loc_contains!r}: {details!r}"
        )
    return details


async def place(client: AmqpClient, body: JSONObject, **props: Any) -> JSONObject:
    """Place an order and return the order from the successful reply."""
    data = assert_success(await client.request("orders.place", body, **props))
    assert isinstance(data, dict)
    return data


async def act(client: AmqpClient, order_db_id: int, action: str, **fields: Any) -> JSONObject:
    """Send an OrderAction and return the raw reply envelope."""
    return await client.request("orders.action", {"id": order_db_id, "action": action, **fields})


async def get_order(client: AmqpClient, order_db_id: int) -> JSONObject:
    data = assert_success(await client.request("orders.get", {"id": order_db_id}))
    assert isinstance(data, dict)
    return data


async def list_orders(client: AmqpClient, **query: Any) -> JSONObject:
    reply = await client.request("orders.list", query)
    assert_success(reply)
    return reply


def assert_example_order_placed(order: JSONObject, customer_id: str) -> None:
    """The documented example order as placed: totals, status, currency and what was sent."""
    assert order["customer_id"] == customer_id
    assert order["total"] == "300.00"
    assert order["subtotal"] == "300.00"
    assert order["total_tax"] == "0.00"
    assert order["status"] == "pending"
    assert order["currency"] == "EUR"
    assert order["currency_symbol"] == "€"
    assert order["version"] == 1
    assert order["billing"] == EXAMPLE_ORDER["billing"]
    assert order["metadata"] == EXAMPLE_ORDER["metadata"]
    assert order["notes"] == EXAMPLE_ORDER["notes"]
    assert [item["price"] for item in order["items"]] == ["150.00", "75.00"]
    assert TIMESTAMP_RE.match(order["created_at"]), order["created_at"]
    assert TIMESTAMP_RE.match(order["updated_at"]), order["updated_at"]
