"""The documented example flow of the original API, carried over to messages."""

from __future__ import annotations

from decimal import Decimal

from .amqp_client import AmqpClient, Event, EventCollector, EventPredicate, decode_object
from .contract import (
    STATUS_CHANGED_FIELDS,
    STATUSES,
    TIMESTAMP_RE,
    act,
    assert_example_order_placed,
    assert_json_number,
    assert_money,
    assert_success,
    example_order,
    new_customer_id,
    place,
    simple_order,
)


def _expected_subtotal(items: list[dict[str, object]]) -> Decimal:
    return sum(
        (Decimal(str(item["price"])) * int(str(item["quantity"])) for item in items),
        start=Decimal(0),
    )


async def test_documented_example_flow(client: AmqpClient, events: EventCollector) -> None:
    customer_id = new_customer_id()
    body = example_order(customer_id)
    expected_total = _expected_subtotal(body["items"])
    assert expected_total == Decimal("300.00")

    # Place.
    reply = await client.request_message("orders.place", body)
    placed_correlation_id = reply.correlation_id
    envelope = decode_object(reply.body)
    assert envelope["success"] is True, envelope
    assert envelope["message"] == "Order placed successfully"
    order = envelope["data"]
    assert_money(order["total"], expected_total)
    assert_example_order_placed(order, customer_id)
    assert isinstance(order["id"], int)
    assert not isinstance(order["id"], bool)
    assert order["id"] >= 1
    assert isinstance(order["order_id"], int)
    assert order["order_id"] >= 100_000
    assert order["order_id"] != order["id"]
    assert order["customer_id"] == customer_id
    assert order["notes"] == body["notes"]
    assert order["metadata"] == body["metadata"]
    assert order["billing"] == body["billing"]
    assert order["billing"]["first_name"] == "John"
    assert order["billing"]["last_name"] == "Doe"
    assert [item["product_name"] for item in order["items"]] == [
        "Premium Cleaning Service",
        "Window Cleaning",
    ]
    assert [item["quantity"] for item in order["items"]] == [1, 2]
    assert order["items"][0]["metadata"] == {"filter_options": [1, 2, 3]}
    for item, sent in zip(order["items"], body["items"], strict=True):
        assert_money(item["price"], Decimal(str(sent["price"])))
    assert TIMESTAMP_RE.match(order["created_at"]), order["created_at"]
    assert TIMESTAMP_RE.match(order["updated_at"]), order["updated_at"]
    assert len(order["status_history"]) == 1
    first = order["status_history"][0]
    assert set(first) >= {"from", "to", "at", "action", "notes", "reason"}, first
    assert first["from"] is None
    assert first["to"] == "pending"
    assert TIMESTAMP_RE.match(first["at"]), first

    order_db_id = order["id"]

    def placed(event: Event) -> bool:
        return event.routing_key == "order.placed" and event.order_db_id == order_db_id

    placed_event = await events.wait_for(placed)
    assert placed_event.body["event_type"] == "order.placed"
    assert placed_event.body["order"] == order
    assert placed_event.message_id == placed_event.body["event_id"]
    assert placed_event.correlation_id == placed_correlation_id
    assert placed_event.delivery_mode == 2  # persistent
    assert placed_event.content_type == "application/json"
    assert isinstance(placed_event.body["occurred_at"], str)

    # Update status: pending -> in_progress.
    updated = assert_success(
        await act(
            client, order_db_id, "update_status", status="in_progress", notes="Work has started"
        )
    )
    assert updated["status"] == "in_progress"
    assert updated["version"] == 2
    assert updated["updated_at"] >= order["updated_at"]
    assert updated["status_history"][-1]["from"] == "pending"
    assert updated["status_history"][-1]["to"] == "in_progress"
    assert updated["status_history"][-1]["notes"] == "Work has started"
    assert updated["status_history"][-1]["action"] == "update_status"

    def status_changed(version: int) -> EventPredicate:
        return lambda e: (
            e.routing_key == "order.status_changed"
            and e.order_db_id == order_db_id
            and e.body.get("version") == version
        )

    started = await events.wait_for(status_changed(2))
    assert started.body.keys() >= STATUS_CHANGED_FIELDS, started.body
    assert started.body["event_type"] == "order.status_changed"
    assert started.body["from_status"] == "pending"
    assert started.body["to_status"] == "in_progress"
    assert started.body["action"] == "update_status"
    assert started.body["notes"] == "Work has started"
    assert started.body["order_id"] == order["order_id"]
    assert started.body["customer_id"] == customer_id
    assert started.message_id == started.body["event_id"]
    assert started.delivery_mode == 2

    # Complete: in_progress -> completed.
    completed = assert_success(
        await act(client, order_db_id, "complete", notes="Order delivered successfully")
    )
    assert completed["status"] == "completed"
    assert completed["version"] == 3
    assert [(h["from"], h["to"]) for h in completed["status_history"]] == [
        (None, "pending"),
        ("pending", "in_progress"),
        ("in_progress", "completed"),
    ]
    assert completed["status_history"][-1]["action"] == "complete"
    assert completed["status_history"][-1]["notes"] == "Order delivered successfully"

    done = await events.wait_for(status_changed(3))
    assert done.body["from_status"] == "in_progress"
    assert done.body["to_status"] == "completed"
    assert done.body["action"] == "complete"
    assert done.message_id == done.body["event_id"]
    assert done.body["event_id"] != started.body["event_id"]
    assert len(events.for_order(order_db_id, "order.status_changed")) == 2

    # Get by id and by order_id: the same order as the last reply.
    by_id = assert_success(await client.request("orders.get", {"id": order_db_id}))
    by_order_id = assert_success(
        await client.request("orders.get", {"order_id": order["order_id"]})
    )
    assert by_id == completed
    assert by_order_id == completed

    # List: exactly that order, one page.
    listed = await client.request(
        "orders.list", {"customer_id": customer_id, "status": "completed"}
    )
    rows = assert_success(listed)
    assert len(rows) == 1
    assert rows[0]["id"] == order_db_id
    assert rows[0]["order_id"] == order["order_id"]
    assert rows[0]["customer_id"] == customer_id
    assert rows[0]["status"] == "completed"
    assert rows[0]["total"] == "300.00"
    assert rows[0]["created_at"] == order["created_at"]
    assert listed["pagination"] == {"current_page": 1, "per_page": 15, "total": 1, "last_page": 1}

    # Stats for that customer.
    stats = assert_success(await client.request("orders.stats", {"customer_id": customer_id}))
    assert stats["total_orders"] == 1
    assert stats["completed_orders"] == 1
    assert_json_number(stats["total_revenue"], 300)
    assert_json_number(stats["average_order_value"], 300)
    assert stats["active_orders"] == 0
    assert set(stats["status_breakdown"]) == set(STATUSES)
    assert stats["status_breakdown"] == {s: int(s == "completed") for s in STATUSES}
    for status in STATUSES:
        assert stats[f"{status}_orders"] == int(status == "completed"), status
    assert stats["unique_customers"] == 1
    assert stats["repeat_customers"] == 0


async def test_money_is_exact_decimal(client: AmqpClient) -> None:
    customer_id = new_customer_id()
    body = simple_order(customer_id)
    body["items"] = [
        {"product_id": 1, "product_name": "A", "quantity": 3, "price": "19.99"},
        {"product_id": "b-2", "product_name": "B", "quantity": 3, "price": 0.1},
        {"product_id": 3, "product_name": "C", "quantity": 7, "price": 0.7},
    ]
    body["total_tax"] = "1.01"
    expected_subtotal = Decimal("19.99") * 3 + Decimal("0.1") * 3 + Decimal("0.7") * 7
    order = await place(client, body)
    assert_money(order["subtotal"], expected_subtotal)
    assert order["subtotal"] == "65.17"
    assert order["total_tax"] == "1.01"
    assert order["total"] == "66.18"
    assert [item["product_id"] for item in order["items"]] == [1, "b-2", 3]


async def test_given_total_is_kept(client: AmqpClient) -> None:
    body = simple_order(new_customer_id(), price="10.00", quantity=2, total="25.50")
    order = await place(client, body)
    assert order["subtotal"] == "20.00"
    assert order["total"] == "25.50"
    assert order["total_tax"] == "0.00"


async def test_placing_with_status_and_user_id(client: AmqpClient) -> None:
    body = simple_order(new_customer_id(), status="on_hold", user_id="user-42")
    order = await place(client, body)
    assert order["status"] == "on_hold"
    assert order["user_id"] == "user-42"
    assert order["version"] == 1
    assert [(h["from"], h["to"]) for h in order["status_history"]] == [(None, "on_hold")]


async def test_boundaries_are_accepted(client: AmqpClient) -> None:
    item = {"product_id": 7, "product_name": "Bulk", "quantity": 10_000, "price": "0.01"}
    order = await place(client, simple_order(new_customer_id(), items=[item]))
    assert order["subtotal"] == "100.00"
    free = {"product_id": 8, "product_name": "Free", "quantity": 1, "price": 0}
    order = await place(client, simple_order(new_customer_id(), items=[free] * 500))
    assert len(order["items"]) == 500
    assert order["total"] == "0.00"
    assert order["items"][0]["price"] == "0.00"


async def test_amounts_as_numbers_or_strings(client: AmqpClient) -> None:
    item = {"product_id": 1, "product_name": "A", "quantity": 2, "price": 12.5}
    order = await place(client, simple_order(new_customer_id(), items=[item], total_tax=2))
    assert order["items"][0]["price"] == "12.50"
    assert order["subtotal"] == "25.00"
    assert order["total_tax"] == "2.00"
    assert order["total"] == "27.00"


async def test_other_currency(client: AmqpClient) -> None:
    order = await place(client, simple_order(new_customer_id(), currency="USD"))
    assert order["currency"] == "USD"
    assert order["currency_symbol"] == "$"
