"""A small program written against the client distribution alone (orders_client, schemas and
orders_vocabulary): tests/e2e/test_client_distribution.py runs it, and type-checks it with
`mypy --strict`, in a virtual environment that holds only the client and its dependencies.

    python client_program.py AMQP_URL CUSTOMER_ID

prints one JSON object: the statuses, and the order as placed, cancelled and read back.
"""

from __future__ import annotations

import asyncio
import json
import sys
from decimal import Decimal

from orders_client import InvalidTransition, OrdersClient
from orders_vocabulary.statuses import OrderStatus
from schemas import Billing, CancelOrder, CompleteOrder, OrderItem, OrderView, PlaceOrder


def summary(order: OrderView) -> dict[str, object]:
    return {
        "id": order.id,
        "customer_id": order.customer_id,
        "status": order.status.value,
        "total": order.total,
        "version": order.version,
    }


async def run(url: str, customer_id: str) -> dict[str, object]:
    async with OrdersClient(url, timeout=15) as orders:
        statuses: list[OrderStatus] = await orders.statuses()
        placed = await orders.place(
            PlaceOrder(
                customer_id=customer_id,
                items=[
                    OrderItem(
                        product_id="sku-1", product_name="Thing", quantity=2, price=Decimal("7.50")
                    )
                ],
                billing=Billing(first_name="Jo", last_name="Doe", email="jo@example.com"),
            )
        )
        cancelled = await orders.act(
            CancelOrder(id=placed.id, action="cancel", reason="Changed my mind")
        )
        try:
            await orders.act(CompleteOrder(id=placed.id, action="complete"))
        except InvalidTransition as exc:
            refused: list[str] = [exc.from_status or "", exc.to_status or ""]
        else:
            refused = []
        read: OrderView = await orders.get(placed.id)
    return {
        "statuses": [status.value for status in statuses],
        "placed": summary(placed),
        "cancelled": summary(cancelled),
        "refused": refused,
        "read": summary(read),
    }


def main() -> None:
    url, customer_id = sys.argv[1], sys.argv[2]
    sys.stdout.write(json.dumps(asyncio.run(run(url, customer_id))) + "\n")


if __name__ == "__main__":
    main()
