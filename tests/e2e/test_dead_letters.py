"""Commands without ``reply_to`` that cannot be applied: dead-lettered and announced."""

from __future__ import annotations

import json
import uuid
from typing import Any

from .amqp_client import AmqpClient, DeadLetter, DeadLetterReader, Event, EventCollector
from .contract import (
    assert_success,
    get_order,
    list_orders,
    new_customer_id,
    place,
    simple_order,
)


def _rejected(marker: str) -> Any:
    def predicate(event: Event) -> bool:
        return event.routing_key == "order.command_rejected" and marker in json.dumps(
            event.body.get("payload"), default=str
        )

    return predicate


def _dead(body: bytes) -> Any:
    def predicate(letter: DeadLetter) -> bool:
        return letter.body == body

    return predicate


def _assert_dead_letter(letter: DeadLetter, routing_key: str, code: str) -> None:
    assert letter.routing_key == routing_key
    assert letter.headers.get("x-error-code") == code, letter.headers
    message = letter.headers.get("x-error-message")
    assert isinstance(message, str), letter.headers
    assert message.strip()
    assert "Traceback" not in message
    assert "mongodb://" not in message


def _assert_rejection(event: Event, routing_key: str, code: str) -> dict[str, Any]:
    body = event.body
    assert body["event_type"] == "order.command_rejected"
    assert body["routing_key"] == routing_key
    assert isinstance(body["occurred_at"], str)
    assert event.message_id == body["event_id"]
    assert event.delivery_mode == 2
    error = body["error"]
    assert isinstance(error, dict), body
    assert error["code"] == code
    assert isinstance(error["message"], str)
    assert error["message"].strip()
    assert "details" in error
    return error


async def test_invalid_place_without_reply_to_is_dead_lettered(
    client: AmqpClient, events: EventCollector, dead_letters: DeadLetterReader
) -> None:
    customer_id = new_customer_id()
    payload = simple_order(customer_id)
    del payload["billing"]
    raw = json.dumps(payload).encode()
    correlation_id = uuid.uuid4().hex
    message_id = await client.publish("orders.place", raw, correlation_id=correlation_id)

    letter = await dead_letters.wait_for(_dead(raw))
    _assert_dead_letter(letter, "orders.place", "validation_error")
    # It is the original message: its properties survive.
    assert letter.message_id == message_id
    assert letter.correlation_id == correlation_id

    event = await events.wait_for(_rejected(customer_id))
    error = _assert_rejection(event, "orders.place", "validation_error")
    assert isinstance(error["details"], list)
    assert any("billing" in [str(p) for p in d["loc"]] for d in error["details"]), error
    assert event.body["payload"] == payload
    assert event.correlation_id == correlation_id

    listed = await list_orders(client, customer_id=customer_id)
    assert listed["pagination"]["total"] == 0


async def test_non_json_command_without_reply_to_is_dead_lettered(
    events: EventCollector, client: AmqpClient, dead_letters: DeadLetterReader
) -> None:
    marker = uuid.uuid4().hex
    raw = f"definitely not json {marker}".encode()
    await client.publish("orders.place", raw)

    letter = await dead_letters.wait_for(_dead(raw))
    _assert_dead_letter(letter, "orders.place", "bad_request")

    event = await events.wait_for(_rejected(marker))
    _assert_rejection(event, "orders.place", "bad_request")
    assert event.body["payload"] == raw.decode()


async def test_failed_action_without_reply_to_is_dead_lettered(
    client: AmqpClient, events: EventCollector, dead_letters: DeadLetterReader
) -> None:
    order = await place(client, simple_order(new_customer_id()))
    payload = {"id": order["id"], "action": "complete", "notes": uuid.uuid4().hex}
    raw = json.dumps(payload).encode()
    await client.publish("orders.action", raw)

    letter = await dead_letters.wait_for(_dead(raw))
    _assert_dead_letter(letter, "orders.action", "invalid_transition")

    event = await events.wait_for(_rejected(payload["notes"]))
    error = _assert_rejection(event, "orders.action", "invalid_transition")
    assert error["details"]["from"] == "pending"
    assert error["details"]["to"] == "completed"
    assert event.body["payload"] == payload

    stored = await get_order(client, order["id"])
    assert stored["status"] == "pending"
    assert stored["version"] == 1


async def test_action_on_missing_order_without_reply_to_is_dead_lettered(
    client: AmqpClient, events: EventCollector, dead_letters: DeadLetterReader
) -> None:
    marker = uuid.uuid4().hex
    payload = {"id": 987_654_321, "action": "cancel", "reason": marker}
    raw = json.dumps(payload).encode()
    await client.publish("orders.action", raw)
    _assert_dead_letter(await dead_letters.wait_for(_dead(raw)), "orders.action", "not_found")
    _assert_rejection(await events.wait_for(_rejected(marker)), "orders.action", "not_found")


async def test_valid_commands_without_reply_to_are_applied(
    client: AmqpClient, events: EventCollector
) -> None:
    customer_id = new_customer_id()
    await client.publish("orders.place", simple_order(customer_id))
    placed = await events.wait_for(
        lambda e: (
            e.routing_key == "order.placed"
            and e.body.get("order", {}).get("customer_id") == customer_id
        )
    )
    order_db_id = placed.order_db_id
    assert isinstance(order_db_id, int)

    await client.publish(
        "orders.action", {"id": order_db_id, "action": "cancel", "reason": "changed mind"}
    )
    changed = await events.wait_for(
        lambda e: e.routing_key == "order.status_changed" and e.order_db_id == order_db_id
    )
    assert changed.body["to_status"] == "cancelled"
    assert changed.body["reason"] == "changed mind"
    stored = assert_success(await client.request("orders.get", {"id": order_db_id}))
    assert stored["status"] == "cancelled"
    assert stored["version"] == 2


async def test_oversized_command_without_reply_to_is_dead_lettered(
    client: AmqpClient, dead_letters: DeadLetterReader
) -> None:
    raw = json.dumps(simple_order(new_customer_id())).encode()
    raw = raw[:-1] + b" " * (256 * 1024) + raw[-1:]
    await client.publish("orders.place", raw)
    _assert_dead_letter(await dead_letters.wait_for(_dead(raw)), "orders.place", "bad_request")


async def test_unparseable_query_without_reply_to_is_dead_lettered(
    client: AmqpClient, dead_letters: DeadLetterReader
) -> None:
    """Never silently dropped: with nobody to reply to, it goes to the dead letters."""
    for routing_key in ("orders.list", "orders.get", "orders.stats"):
        raw = f"not json {uuid.uuid4().hex}".encode()
        await client.publish(routing_key, raw)
        _assert_dead_letter(await dead_letters.wait_for(_dead(raw)), routing_key, "bad_request")
