"""Request/reply as any AMQP client sees it: one reply, on the default exchange."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage

from .amqp_client import COMMANDS_EXCHANGE, AmqpClient, DeadLetterReader, decode_object
from .contract import (
    STATUSES,
    assert_error,
    assert_success,
    assert_validation_error,
    new_customer_id,
    simple_order,
)

MAX_BODY = 256 * 1024


async def test_reply_properties(client: AmqpClient) -> None:
    correlation_id = uuid.uuid4().hex
    reply = await client.request_message(
        "orders.statuses", {}, correlation_id=correlation_id, message_id="statuses-1"
    )
    assert reply.correlation_id == correlation_id
    assert reply.exchange == ""  # the default exchange
    assert reply.routing_key == client.reply_queue.name
    assert reply.content_type == "application/json"
    assert reply.body.decode("utf-8")  # UTF-8 JSON
    assert assert_success(decode_object(reply.body)) == STATUSES


async def test_direct_reply_to(client: AmqpClient) -> None:
    """``amq.rabbitmq.reply-to``: consume and publish on the same channel."""
    channel = await client.connection.channel()
    try:
        replies: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        pseudo_queue = await channel.get_queue("amq.rabbitmq.reply-to", ensure=False)
        await pseudo_queue.consume(replies.put, no_ack=True)
        exchange = await channel.get_exchange(COMMANDS_EXCHANGE, ensure=False)
        customer_id = new_customer_id()
        requests: dict[str, tuple[str, bytes]] = {
            uuid.uuid4().hex: ("orders.statuses", b"{}"),
            uuid.uuid4().hex: ("orders.place", json.dumps(simple_order(customer_id)).encode()),
            uuid.uuid4().hex: ("orders.get", b'{"id": 987654321}'),
        }
        for correlation_id, (routing_key, body) in requests.items():
            await exchange.publish(
                aio_pika.Message(
                    body,
                    content_type="application/json",
                    correlation_id=correlation_id,
                    message_id=uuid.uuid4().hex,
                    reply_to="amq.rabbitmq.reply-to",
                ),
                routing_key=routing_key,
            )
        received: dict[str, dict[str, Any]] = {}
        async with asyncio.timeout(10):
            while len(received) < len(requests):
                message = await replies.get()
                assert message.correlation_id in requests
                assert message.correlation_id not in received, "two replies to one request"
                received[message.correlation_id] = decode_object(message.body)
        by_key = {requests[cid][0]: body for cid, body in received.items()}
        assert assert_success(by_key["orders.statuses"]) == STATUSES
        assert assert_success(by_key["orders.place"])["customer_id"] == customer_id
        assert_error(by_key["orders.get"], "not_found")
    finally:
        await channel.close()


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/octet-stream", "application/json"]
)
async def test_any_content_type_gets_exactly_one_reply(
    client: AmqpClient, content_type: str | None
) -> None:
    """A JSON body is a JSON body; whatever the label, the request gets one reply."""
    reply = await client.request("orders.statuses", b"{}", content_type=content_type)
    assert reply["success"] in {True, False}
    if reply["success"] is False:
        assert_error(reply, "bad_request")


async def test_json_body_without_content_type_is_processed(client: AmqpClient) -> None:
    customer_id = new_customer_id()
    reply = await client.request("orders.place", simple_order(customer_id), content_type=None)
    assert assert_success(reply)["customer_id"] == customer_id


def _order_of_size(size: int) -> bytes:
    """A valid PlaceOrder padded with insignificant JSON whitespace to exactly ``size`` bytes."""
    raw = json.dumps(simple_order(new_customer_id())).encode()
    padded = raw[:-1] + b" " * (size - len(raw)) + raw[-1:]
    assert len(padded) == size
    return padded


async def test_256_kib_is_the_limit(client: AmqpClient) -> None:
    assert_success(await client.request("orders.place", _order_of_size(MAX_BODY)))
    assert_error(await client.request("orders.place", _order_of_size(MAX_BODY + 1)), "bad_request")


async def test_get_needs_an_id(client: AmqpClient) -> None:
    assert_validation_error(await client.request("orders.get", {}))
    assert_validation_error(await client.request("orders.get", {"id": "abc"}))


async def test_concurrent_requests_each_get_their_own_reply(client: AmqpClient) -> None:
    customer_ids = [new_customer_id() for _ in range(30)]
    replies = await asyncio.gather(
        *(client.request("orders.place", simple_order(c)) for c in customer_ids)
    )
    assert [assert_success(r)["customer_id"] for r in replies] == customer_ids


async def test_a_named_reply_queue_gets_nothing_by_default(
    client: AmqpClient, dead_letters: DeadLetterReader
) -> None:
    """Without ORDERS_REPLY_QUEUE_PATTERN only server-named queues and direct reply-to
    receive replies; the request is dead-lettered as bad_request (tests/e2e/test_reply_to.py)."""
    channel = await client.connection.channel()
    try:
        named = await channel.declare_queue(f"e2e.replies.{uuid.uuid4().hex}", auto_delete=True)
        message_id = await client.publish("orders.statuses", {}, reply_to=named.name)
        letter = await dead_letters.wait_for(lambda m: m.message_id == message_id, timeout=30)
        assert letter.headers["x-error-code"] == "bad_request"
        assert await named.get(no_ack=True, fail=False) is None
    finally:
        await channel.close()
