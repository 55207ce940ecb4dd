"""A worker's broker on the 3-node cluster: when the node it is connected to, or the node
holding its quorum queue's leader, stops or is killed, it goes on consuming from a surviving
node, and no message is lost."""

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

FAILOVER_SECONDS = 60
BATCH = 20


def connected_node(broker: RabbitBroker) -> int:
    connection: Any = broker._connection
    assert connection is not None
    return int(connection.url.port) - cluster.RABBIT_PORT_BASE


async def publish(vhost: str, node: int, queue: str, bodies: list[str]) -> None:
    """Publish `bodies` to `queue` through node `node` only, each until it is confirmed: while
    the queue elects a new leader, RabbitMQ refuses (nacks) what is published to it."""
    connection = await aio_pika.connect(cluster.amqp_url(vhost, nodes=[node]))
    async with connection, asyncio.timeout(FAILOVER_SECONDS):
        for body in bodies:
            while True:
                channel = await connection.channel()
                try:
                    await channel.default_exchange.publish(
                        aio_pika.Message(
                            body.encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT
                        ),
                        routing_key=queue,
                    )
                except aio_pika.exceptions.DeliveryError:
                    await asyncio.sleep(0.5)
                else:
                    break
                finally:
                    await channel.close()


class Inbox:
    """The bodies a consumer received; waits until it holds a given set."""

    def __init__(self) -> None:
        self.bodies: set[str] = set()
        self._changed = asyncio.Condition()

    async def add(self, body: str) -> None:
        async with self._changed:
            self.bodies.add(body)
            self._changed.notify_all()

    async def holds(self, expected: set[str]) -> None:
        async with asyncio.timeout(FAILOVER_SECONDS), self._changed:
            await self._changed.wait_for(lambda: expected <= self.bodies)


@pytest.mark.parametrize("fault", [cluster.stop_node, cluster.kill_node], ids=["stop", "kill"])
@pytest.mark.parametrize("target", ["connected", "leader"])
async def test_the_consumer_goes_on_from_a_surviving_node(
    cluster_vhost: str, fault: Callable[[int], object], target: str
) -> None:
    name = f"failover.{target}.{getattr(fault, '__name__', 'fault')}"
    broker = rabbit_broker(cluster.amqp_url(cluster_vhost), fail_fast=False, reconnect_interval=1)
    inbox = Inbox()

    @broker.subscriber(RabbitQueue(name, queue_type=QueueType.QUORUM, durable=True))
    async def handle(body: str) -> None:
        await inbox.add(body)

    async with broker:
        await broker.start()
        leader = cluster.queue_leader(name, cluster_vhost)
        assert leader is not None
        down = connected_node(broker) if target == "connected" else leader
        survivor = next(index for index in range(1, cluster.SIZE + 1) if index != down)
        before = {f"before-{n}" for n in range(BATCH)}
        await publish(cluster_vhost, survivor, name, sorted(before))
        await inbox.holds(before)

        await asyncio.to_thread(fault, down)
        try:
            after = {f"after-{n}" for n in range(BATCH)}
            await publish(cluster_vhost, survivor, name, sorted(after))
            await inbox.holds(before | after)
            assert inbox.bodies == before | after
            assert cluster.queue_leader(name, cluster_vhost) not in {None, down}
            if target == "connected":
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
