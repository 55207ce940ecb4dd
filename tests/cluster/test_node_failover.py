"""A worker's broker on the 3-node cluster: when the node it is connected to stops, or is
killed, it reconnects to a surviving node and consumes again from the same quorum queue."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aio_pika
import pytest
from faststream.rabbit import QueueType, RabbitBroker, RabbitQueue

from devtools import cluster
from service.amqp_connection import rabbit_broker

pytestmark = pytest.mark.cluster

QUEUE = RabbitQueue("failover.check", queue_type=QueueType.QUORUM, durable=True)
FAILOVER_SECONDS = 60


def connected_node(broker: RabbitBroker) -> int:
    connection: Any = broker._connection
    assert connection is not None
    return int(connection.url.port) - cluster.RABBIT_PORT_BASE


async def publish(vhost: str, node: int, body: str) -> None:
    """Publish `body` to the queue through node `node` only, until it is confirmed: while
    the queue elects a new leader, RabbitMQ refuses (nacks) what is published to it."""
    connection = await aio_pika.connect(cluster.amqp_url(vhost, nodes=[node]))
    async with connection, asyncio.timeout(FAILOVER_SECONDS):
        while True:
            channel = await connection.channel()
            try:
                await channel.default_exchange.publish(
                    aio_pika.Message(body.encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key=QUEUE.name,
                )
            except aio_pika.exceptions.DeliveryError:
                await asyncio.sleep(0.5)
            else:
                return
            finally:
                await channel.close()


@pytest.mark.parametrize("fault", [cluster.stop_node, cluster.kill_node], ids=["stop", "kill"])
async def test_the_consumer_moves_to_a_surviving_node(
    cluster_vhost: str, fault: Callable[[int], object]
) -> None:
    broker = rabbit_broker(cluster.amqp_url(cluster_vhost), fail_fast=False, reconnect_interval=1)
    received: asyncio.Queue[str] = asyncio.Queue()

    @broker.subscriber(QUEUE)
    async def handle(body: str) -> None:
        await received.put(body)

    async with broker:
        await broker.start()
        down = connected_node(broker)
        survivor = next(index for index in range(1, cluster.SIZE + 1) if index != down)
        await publish(cluster_vhost, survivor, "before")
        assert await asyncio.wait_for(received.get(), 10) == "before"

        await asyncio.to_thread(fault, down)
        try:
            await publish(cluster_vhost, survivor, "after")
            assert await asyncio.wait_for(received.get(), FAILOVER_SECONDS) == "after"
            assert connected_node(broker) != down
        finally:
            await asyncio.to_thread(cluster.start_node, down)


def test_a_killed_primary_is_replaced(cluster_vhost: str) -> None:
    first = cluster.wait_for_primary()
    cluster.kill_member(first)
    try:
        assert cluster.wait_for_primary(timeout=60) != first
    finally:
        cluster.start_member(first)
