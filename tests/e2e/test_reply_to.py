"""`reply_to` cannot turn the worker into a confused deputy: replies go only to server-named
queues, to direct reply-to and to queues matching ``ORDERS_REPLY_QUEUE_PATTERN`` (here
``e2e\\.replies\\..+``). Any other ``reply_to`` gets no reply and is dead-lettered as
``bad_request``; a command is announced as rejected and not applied."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pytest
import pytest_asyncio
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from .amqp_client import COMMANDS_EXCHANGE, AmqpClient, DeadLetterReader, EventCollector
from .contract import (
    STATUSES,
    assert_success,
    get_order,
    list_orders,
    new_customer_id,
    place,
    simple_order,
)
from .waiting import eventually

ALLOWED_PREFIX = "e2e.replies."


WORKER_ENV = {"ORDERS_REPLY_QUEUE_PATTERN": r"e2e\.replies\..+"}
"""The worker of this module also replies to queues named `e2e.replies.<anything>`."""


@pytest_asyncio.fixture(loop_scope="session")
async def channel(client: AmqpClient) -> AsyncIterator[AbstractChannel]:
    opened = await client.connection.channel()
    try:
        yield opened
    finally:
        await opened.close()


async def named_queue(channel: AbstractChannel, name: str) -> AbstractQueue:
    """A queue with a name of our choosing, as another application's queue would be."""
    return await channel.declare_queue(name, auto_delete=True)


async def publish(channel: AbstractChannel, routing_key: str, body: Any, reply_to: str) -> str:
    message_id = uuid.uuid4().hex
    exchange = await channel.get_exchange(COMMANDS_EXCHANGE, ensure=False)
    await exchange.publish(
        aio_pika.Message(
            json.dumps(body).encode(),
            content_type="application/json",
            message_id=message_id,
            correlation_id=uuid.uuid4().hex,
            reply_to=reply_to,
        ),
        routing_key=routing_key,
    )
    return message_id


async def test_a_place_replying_into_another_queue_is_refused_and_not_applied(
    client: AmqpClient,
    channel: AbstractChannel,
    dead_letters: DeadLetterReader,
    events: EventCollector,
) -> None:
    victim = await named_queue(channel, f"e2e.victim.{uuid.uuid4().hex}")
    customer = new_customer_id()
    message_id = await publish(channel, "orders.place", simple_order(customer), victim.name)

    letter = await dead_letters.wait_for(lambda m: m.message_id == message_id, timeout=30)
    assert letter.routing_key == "orders.place"
    assert letter.headers["x-error-code"] == "bad_request"
    assert victim.name in letter.headers["x-error-message"]
    rejected = await events.wait_for(
        lambda e: (
            e.routing_key == "order.command_rejected"
            and e.body["payload"].get("customer_id") == customer
        ),
        timeout=30,
    )
    assert rejected.body["error"]["code"] == "bad_request"
    assert rejected.body["error"]["details"] == {"reply_to": victim.name}
    assert (await list_orders(client, customer_id=customer))["pagination"]["total"] == 0
    # A reply would have been sent before the dead letter: the queue got nothing.
    assert await victim.get(no_ack=True, fail=False) is None


async def test_an_action_replying_into_another_queue_is_refused_and_not_applied(
    client: AmqpClient,
    channel: AbstractChannel,
    dead_letters: DeadLetterReader,
    events: EventCollector,
) -> None:
    order = await place(client, simple_order(new_customer_id()))
    victim = await named_queue(channel, f"e2e.victim.{uuid.uuid4().hex}")
    message_id = await publish(
        channel, "orders.action", {"id": order["id"], "action": "cancel"}, victim.name
    )
    letter = await dead_letters.wait_for(lambda m: m.message_id == message_id, timeout=30)
    assert letter.headers["x-error-code"] == "bad_request"
    rejected = await events.wait_for(
        lambda e: (
            e.routing_key == "order.command_rejected" and e.body["payload"].get("id") == order["id"]
        ),
        timeout=30,
    )
    assert rejected.body["error"]["code"] == "bad_request"
    assert (await get_order(client, order["id"]))["status"] == "pending"
    assert await victim.get(no_ack=True, fail=False) is None


@pytest.mark.parametrize(
    ("name", "ours"),
    [
        ("orders.place", False),  # a work queue: a reply there would be a bogus command
        ("amq.gen", False),  # not server-named (and no client may declare amq.*)
        ("e2e.replies.", True),  # the pattern needs a suffix
        ("xe2e.replies.1", True),  # the whole name must match
    ],
    ids=["a-work-queue", "not-server-named", "the-pattern-needs-a-suffix", "not-at-the-start"],
)
async def test_a_query_replying_into_another_queue_is_dead_lettered(
    channel: AbstractChannel, dead_letters: DeadLetterReader, name: str, ours: bool
) -> None:
    victim = await named_queue(channel, name) if ours else None
    message_id = await publish(channel, "orders.statuses", {}, name)
    letter = await dead_letters.wait_for(lambda m: m.message_id == message_id, timeout=30)
    assert letter.routing_key == "orders.statuses"
    assert letter.headers["x-error-code"] == "bad_request"
    if victim is not None:
        assert await victim.get(no_ack=True, fail=False) is None


async def test_replies_go_to_a_server_named_queue(client: AmqpClient) -> None:
    assert client.reply_queue.name.startswith("amq.gen-")
    reply = await client.request_message("orders.statuses", {})
    assert reply.routing_key == client.reply_queue.name
    assert assert_success(json.loads(reply.body)) == STATUSES


async def test_replies_go_to_direct_reply_to(channel: AbstractChannel) -> None:
    replies: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
    pseudo_queue = await channel.get_queue("amq.rabbitmq.reply-to", ensure=False)
    await pseudo_queue.consume(replies.put, no_ack=True)
    await publish(channel, "orders.statuses", {}, "amq.rabbitmq.reply-to")
    async with asyncio.timeout(10):
        reply = await replies.get()
    assert assert_success(json.loads(reply.body)) == STATUSES


async def test_replies_go_to_a_queue_matching_the_setting(
    client: AmqpClient, channel: AbstractChannel
) -> None:
    queue = await named_queue(channel, f"{ALLOWED_PREFIX}{uuid.uuid4().hex}")
    customer = new_customer_id()
    await publish(channel, "orders.place", simple_order(customer), queue.name)
    replies: list[AbstractIncomingMessage] = []

    async def replied() -> bool:
        message = await queue.get(no_ack=True, fail=False)
        if message is not None:
            replies.append(message)
        return bool(replies)

    await eventually(replied, timeout=30, what="a reply in the configured queue")
    assert assert_success(json.loads(replies[0].body))["customer_id"] == customer
    assert (await list_orders(client, customer_id=customer))["pagination"]["total"] == 1
