"""Small builders for commands used across the integration tests."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from schemas.commands import PlaceOrder
from service.store.cursors import CursorCodec

CURSORS = CursorCodec(b"integration tests: cursor key 32+")
"""The list cursors' signer in tests that build `OrderQueries` by hand."""


def place_body(customer_id: str = "CUST-1", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "customer_id": customer_id,
        "items": [
            {"product_id": 1, "product_name": "Premium Cleaning Service", "quantity": 1,
             "price": Decimal("150.00")},
            {"product_id": 2, "product_name": "Window Cleaning", "quantity": 2,
             "price": Decimal("75.00")},
        ],
        "billing": {"first_name": "John", "last_name": "Doe", "email": "john.doe@example.com",
                    "phone": "+31612345678"},
    }  # fmt: skip
    return body | overrides


def place_order(customer_id: str = "CUST-1", **overrides: Any) -> PlaceOrder:
    return PlaceOrder.model_validate(place_body(customer_id, **overrides))
