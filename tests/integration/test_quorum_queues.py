"""The queues as the worker declares them (service/bootstrap.py), on the real broker: quorum
queues, the delivery limit dead-lettering to orders.dead, the retry round through a quorum
delay queue, and the refusal of queues an older version declared."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aio_pika
import pytest
import pytest_asyncio
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from devtools import rabbitmq
from service.bootstrap import StaleQueues, _declare
from service.config import Settings
from service.topology import PLACE, Topology, retry_routing_key, topology

LIMIT = 3
DELAY_MS = 200


@pytest.fixture
def names() -> Topology:
    return topology(Settings(delivery_limit=LIMIT, retry_delays_ms=(DELAY_MS,)))


@pytest_asyncio.fixture
async def channel(vhost_url: str, names: Topology) -> AsyncIterator[AbstractChannel]:
    await _declare(vhost_url, names)
    connection = await aio_pika.connect(vhost_url)
    async with connection:
        yield await connection.channel()


async def next_message(queue: AbstractQueue, timeout: float = 10.0) -> AbstractIncomingMessage:  # noqa: ASYNC109
    arrived: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
    tag = await queue.consume(arrived.put)
    try:
        return await asyncio.wait_for(arrived.get(), timeout)
    finally:
        await queue.cancel(tag)


async def test_every_queue_is_a_quorum_queue(vhost_url: str, channel: AbstractChannel) -> None:
    vhost = vhost_url.rsplit("/", 1)[1]
    rows = rabbitmq._listing("list_queues", "-p", vhost, "name", "type")
    types = {row["name"]: row["type"] for row in rows}
    assert types["orders.dead"] == "quorum"
    assert types[f"orders.retry.1.{DELAY_MS}ms"] == "quorum"
    assert {types[f"orders.{key}"] for key in ("place", "action", "get", "statuses")} == {"quorum"}


async def test_a_message_handed_back_past_the_limit_is_dead_lettered_by_the_broker(
    channel: AbstractChannel, names: Topology
) -> None:
    commands = await channel.get_exchange(names.commands.name)
    await commands.publish(aio_pika.Message(b"{}", message_id="poison"), routing_key=PLACE)
    queue = await channel.get_queue(PLACE)
    counts = []
    for _ in range(LIMIT + 1):
        delivered = await next_message(queue)
        counts.append((delivered.headers or {}).get("x-delivery-count"))
        await delivered.nack(requeue=True)
    dead = await next_message(await channel.get_queue(names.dead_letter_queue.name))
    await dead.ack()
    headers = dead.headers or {}
    assert dead.message_id == "poison"
    assert dead.routing_key == PLACE
    assert headers["x-first-death-reason"] == "delivery_limit"
    assert headers["x-first-death-queue"] == PLACE
    assert counts == [None, 1, 2, 3]
    assert await queue.get(fail=False) is None


async def test_the_retry_round_goes_through_a_quorum_delay_queue(
    channel: AbstractChannel, names: Topology
) -> None:
    retry = await channel.get_exchange(names.retry.name)
    key = retry_routing_key(1, DELAY_MS, PLACE)
    await retry.publish(aio_pika.Message(b"{}", message_id="again"), routing_key=key)
    back = await next_message(await channel.get_queue(PLACE))
    await back.ack()
    assert (back.message_id, back.exchange, back.routing_key) == ("again", "orders.requeue", key)
    deaths = (back.headers or {})["x-death"]
    assert isinstance(deaths, list)
    assert isinstance(deaths[0], dict)
    assert deaths[0]["reason"] == "expired"


async def test_queues_of_an_older_version_are_refused_by_name(
    vhost_url: str, names: Topology
) -> None:
    connection = await aio_pika.connect(vhost_url)
    async with connection:
        channel = await connection.channel()
        for name in ("orders.dead", "orders.get"):
            await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "classic"})
    with pytest.raises(StaleQueues) as refused:
        await _declare(vhost_url, names)
    assert set(refused.value.refusals) == {"orders.dead", "orders.get"}
    assert "inequivalent arg" in refused.value.refusals["orders.get"]
    assert "make migrate-queues" in str(refused.value)
