"""Placing and acting are idempotent on idempotency_key / request_id / AMQP message_id:
the same key with the same body replays, with another body it is an idempotency_conflict."""

from __future__ import annotations

import asyncio
import json
import uuid

from .amqp_client import AmqpClient, EventCollector
from .contract import (
    act,
    assert_error,
    assert_success,
    get_order,
    list_orders,
    new_customer_id,
    place,
    simple_order,
)


async def test_same_idempotency_key_returns_the_first_order(
    client: AmqpClient, events: EventCollector
) -> None:
    customer_id = new_customer_id()
    key = f"idem-{uuid.uuid4().hex}"
    first = await place(client, simple_order(customer_id, idempotency_key=key))
    # Another message (fresh message_id), the same key and the same order, the price spelt
    # otherwise (a number, not a string): the same parsed command, so nothing new.
    same = simple_order(customer_id, idempotency_key=key) | {"status": "pending"}
    same["items"][0]["price"] = 10
    second = await place(client, same)
    assert second == first
    listed = await list_orders(client, customer_id=customer_id)
    assert listed["pagination"]["total"] == 1
    assert [row["id"] for row in listed["data"]] == [first["id"]]
    # One order, so one order.placed event: a later change of it is the barrier.
    barrier = assert_success(await act(client, first["id"], "update_metadata", metadata={"b": 1}))
    await events.wait_for(
        lambda e: (
            e.routing_key == "order.metadata_updated"
            and e.order_db_id == first["id"]
            and e.body.get("version") == barrier["version"]
        )
    )
    placed = events.matching(
        lambda e: e.routing_key == "order.placed" and e.body["order"]["customer_id"] == customer_id
    )
    assert len(placed) == 1


async def test_same_idempotency_key_with_another_body_is_a_conflict_and_creates_nothing(
    client: AmqpClient,
) -> None:
    customer_id, other_customer = new_customer_id(), new_customer_id()
    key = f"idem-{uuid.uuid4().hex}"
    first = await place(client, simple_order(customer_id, idempotency_key=key))

    for other in (
        simple_order(customer_id, price="99.00", idempotency_key=key),
        simple_order(other_customer, email="someone.else@example.com", idempotency_key=key),
    ):
        reply = await client.request("orders.place", other)
        error = assert_error(reply, "idempotency_conflict")
        assert error["details"] == {"key": key}
        assert "data" not in reply or reply["data"] is None
        assert "jane.roe" not in json.dumps(reply)  # nothing of the first order's billing

    assert (await list_orders(client, customer_id=customer_id))["pagination"]["total"] == 1
    assert (await list_orders(client, customer_id=other_customer))["pagination"]["total"] == 0
    assert (await get_order(client, first["id"]))["version"] == 1


async def test_a_caller_key_and_a_message_id_of_the_same_text_are_two_orders(
    client: AmqpClient,
) -> None:
    message_id = f"msg-{uuid.uuid4().hex}"
    by_message_customer, by_key_customer = new_customer_id(), new_customer_id()
    by_message = assert_success(
        await client.request(
            "orders.place", simple_order(by_message_customer), message_id=message_id
        )
    )
    by_key = await place(
        client, simple_order(by_key_customer, idempotency_key=f"amqp-message-id:{message_id}")
    )

    assert by_key["id"] != by_message["id"]
    assert by_key["customer_id"] == by_key_customer
    # Each is found again by its own key.
    again = await place(
        client, simple_order(by_key_customer, idempotency_key=f"amqp-message-id:{message_id}")
    )
    assert again["id"] == by_key["id"]
    redelivered = assert_success(
        await client.request(
            "orders.place", simple_order(by_message_customer), message_id=message_id
        )
    )
    assert redelivered["id"] == by_message["id"]


async def test_a_message_id_reused_for_another_place_is_a_conflict(client: AmqpClient) -> None:
    customer_id = new_customer_id()
    message_id = f"msg-{uuid.uuid4().hex}"
    await client.request("orders.place", simple_order(customer_id), message_id=message_id)

    reply = await client.request(
        "orders.place", simple_order(customer_id, quantity=2), message_id=message_id
    )

    assert assert_error(reply, "idempotency_conflict")["details"] == {"key": message_id}
    assert (await list_orders(client, customer_id=customer_id))["pagination"]["total"] == 1


async def test_same_message_id_without_key_is_placed_once(client: AmqpClient) -> None:
    customer_id = new_customer_id()
    message_id = f"msg-{uuid.uuid4().hex}"
    body = simple_order(customer_id)
    first = assert_success(await client.request("orders.place", body, message_id=message_id))
    again = assert_success(await client.request("orders.place", body, message_id=message_id))
    assert again["id"] == first["id"]
    listed = await list_orders(client, customer_id=customer_id)
    assert listed["pagination"]["total"] == 1


async def test_different_message_ids_without_key_place_two_orders(client: AmqpClient) -> None:
    customer_id = new_customer_id()
    body = simple_order(customer_id)
    first = await place(client, body)
    second = await place(client, body)
    assert second["id"] != first["id"]
    assert second["order_id"] != first["order_id"]
    listed = await list_orders(client, customer_id=customer_id)
    assert listed["pagination"]["total"] == 2


async def test_repeated_request_id_is_applied_once(
    client: AmqpClient, events: EventCollector
) -> None:
    order = await place(client, simple_order(new_customer_id()))
    order_db_id = order["id"]
    request_id = f"req-{uuid.uuid4().hex}"
    fields = {"status": "processing", "expected_version": 1, "request_id": request_id}

    first = assert_success(await act(client, order_db_id, "update_status", **fields))
    assert first["status"] == "processing"
    assert first["version"] == 2
    # The same request again (new message_id). It was already applied, so it succeeds
    # without being applied again, even though expected_version no longer matches.
    again = assert_success(await act(client, order_db_id, "update_status", **fields))
    assert again["status"] == "processing"
    assert again["version"] == 2
    stored = await get_order(client, order_db_id)
    assert stored["version"] == 2
    assert len(stored["status_history"]) == 2

    # A later change is the barrier: events of one order come in version order.
    barrier = assert_success(
        await act(client, order_db_id, "update_metadata", metadata={"barrier": True})
    )
    assert barrier["version"] == 3
    await events.wait_for(
        lambda e: (
            e.routing_key == "order.metadata_updated"
            and e.order_db_id == order_db_id
            and e.body.get("version") == 3
        )
    )
    changes = events.for_order(order_db_id, "order.status_changed")
    assert [(e.body["from_status"], e.body["to_status"], e.body["version"]) for e in changes] == [
        ("pending", "processing", 2)
    ]


async def test_repeated_message_id_on_action_is_applied_once(
    client: AmqpClient, events: EventCollector
) -> None:
    order = await place(client, simple_order(new_customer_id()))
    order_db_id = order["id"]
    message_id = f"msg-{uuid.uuid4().hex}"
    body = {"id": order_db_id, "action": "update_status", "status": "confirmed"}

    first = assert_success(await client.request("orders.action", body, message_id=message_id))
    assert first["version"] == 2
    # A redelivery of the very same message; in between, the order moved on.
    moved = assert_success(await act(client, order_db_id, "update_status", status="processing"))
    assert moved["version"] == 3
    again = assert_success(await client.request("orders.action", body, message_id=message_id))
    assert again["status"] == "processing"
    assert again["version"] == 3

    await events.wait_for_all(
        lambda e: e.routing_key == "order.status_changed" and e.order_db_id == order_db_id, 2
    )
    barrier = assert_success(await act(client, order_db_id, "update_metadata", metadata={"b": 1}))
    await events.wait_for(
        lambda e: (
            e.routing_key == "order.metadata_updated"
            and e.order_db_id == order_db_id
            and e.body.get("version") == barrier["version"]
        )
    )
    changes = events.for_order(order_db_id, "order.status_changed")
    assert [(e.body["to_status"], e.body["version"]) for e in changes] == [
        ("confirmed", 2),
        ("processing", 3),
    ]


async def test_concurrent_places_with_one_idempotency_key_create_one_order(
    client: AmqpClient,
) -> None:
    customer_id = new_customer_id()
    key = f"idem-{uuid.uuid4().hex}"
    orders = await asyncio.gather(
        *(place(client, simple_order(customer_id, idempotency_key=key)) for _ in range(10))
    )
    assert len({order["id"] for order in orders}) == 1
    listed = await list_orders(client, customer_id=customer_id)
    assert listed["pagination"]["total"] == 1


async def test_concurrent_redeliveries_of_a_place_create_one_order(client: AmqpClient) -> None:
    customer_id = new_customer_id()
    message_id = f"msg-{uuid.uuid4().hex}"
    replies = await asyncio.gather(
        *(
            client.request("orders.place", simple_order(customer_id), message_id=message_id)
            for _ in range(10)
        )
    )
    assert len({assert_success(reply)["id"] for reply in replies}) == 1
    listed = await list_orders(client, customer_id=customer_id)
    assert listed["pagination"]["total"] == 1


async def test_concurrent_repeats_of_a_request_id_apply_once(client: AmqpClient) -> None:
    order = await place(client, simple_order(new_customer_id(), metadata={}))
    request_id = f"req-{uuid.uuid4().hex}"
    replies = await asyncio.gather(
        *(
            act(client, order["id"], "update_metadata", metadata={"x": 1}, request_id=request_id)
            for _ in range(10)
        )
    )
    stored = await get_order(client, order["id"])
    assert stored["version"] == 2
    assert stored["metadata"] == {"x": 1}
    # Every reply is a success whose order is the stored one, never a state of its own.
    assert [assert_success(reply) for reply in replies] == [stored] * 10


async def test_a_request_id_reused_for_another_action_is_a_conflict(client: AmqpClient) -> None:
    order = await place(client, simple_order(new_customer_id()))
    request_id = f"req-{uuid.uuid4().hex}"
    applied = assert_success(
        await act(client, order["id"], "update_status", status="confirmed", request_id=request_id)
    )

    for action, fields in (
        ("cancel", {}),
        ("update_status", {"status": "confirmed", "notes": "other notes"}),
        ("update_metadata", {"metadata": {"a": 1}}),
    ):
        reply = await act(client, order["id"], action, request_id=request_id, **fields)
        assert assert_error(reply, "idempotency_conflict")["details"] == {"key": request_id}
    # The same action again still replays.
    again = assert_success(
        await act(client, order["id"], "update_status", status="confirmed", request_id=request_id)
    )
    assert again == applied == await get_order(client, order["id"])
    assert again["version"] == 2


async def test_a_message_id_reused_for_another_action_is_a_conflict(client: AmqpClient) -> None:
    order = await place(client, simple_order(new_customer_id()))
    message_id = f"msg-{uuid.uuid4().hex}"
    body = {"id": order["id"], "action": "update_status", "status": "confirmed"}
    first = assert_success(await client.request("orders.action", body, message_id=message_id))

    other = body | {"status": "on_hold"}
    reply = await client.request("orders.action", other, message_id=message_id)

    assert assert_error(reply, "idempotency_conflict")["details"] == {"key": message_id}
    assert await get_order(client, order["id"]) == first
