"""The consumer watchdog against the real RabbitMQ: a consumer that vanished is started
again."""

from __future__ import annotations

import asyncio
from asyncio import Queue
from typing import Any, cast

from aio_pika.abc import AbstractIncomingMessage
from faststream.rabbit import RabbitBroker
from prometheus_client import CollectorRegistry

from service.app import EveryConsumer, Worker
from service.config import Settings
from service.metrics import ServiceMetrics
from service.topology import ACTION, PLACE, ROUTING_KEYS
from service.worker.consumers import QueueConsumer
from service.worker.watchdog import ConsumerWatchdog


def recording_consumer(broker: RabbitBroker, queue: str) -> tuple[QueueConsumer, Queue[bytes]]:
    """The worker's kind of consumer (every queue's), acking and recording what arrived."""
    received: Queue[bytes] = Queue()

    async def record(raw: AbstractIncomingMessage) -> None:
        await raw.ack()
        await received.put(raw.body)

    return QueueConsumer(queue, record, lambda: broker._connection, prefetch=4), received


async def test_a_vanished_consumer_is_noticed_and_started_again(amqp_url: str) -> None:
    """What the reported bug leaves behind after a reconnect: the queue, without the
    consumer (cancelled under it here)."""
    broker = RabbitBroker(amqp_url)  # its robust connection, as the worker's consumers have
    # the test vhost's orders.place and orders.action are the worker's
    own, received = recording_consumer(broker, "watchdog.own")
    watchdog = ConsumerWatchdog(lambda: broker._connection, [own])
    async with broker:
        await broker.start()
        connection = broker._connection
        assert connection is not None
        setup = await connection.channel()
        queue = await setup.declare_queue(own.queue)
        await own.start(connection)
        try:
            assert await own.attached()
            assert await watchdog.missing() == []

            assert own._channel is not None
            underlay = await own._channel.get_underlay_channel()
            (tag,) = cast(Any, underlay).consumers  # aiormq's channel
            await underlay.basic_cancel(tag)
            assert await watchdog.missing() == ["watchdog.own"]

            assert await watchdog.check() == ["watchdog.own"]
            assert await watchdog.missing() == []
            await broker.publish("after the restart", queue=own.queue)
            assert await asyncio.wait_for(received.get(), 10) == b"after the restart"
        finally:
            await own.close()
            await queue.delete(if_unused=False, if_empty=False)
            await setup.close()
        assert not await own.attached()


async def test_every_queue_the_worker_consumes_is_watched() -> None:
    """The worker's watchdog and readiness cover every command and query queue and every
    action partition; before it starts, all of them are missing. Nothing connects."""
    settings = Settings.model_validate({"amqp_url": "amqp://rabbitmq:5672/"})
    worker = Worker(settings, ServiceMetrics(CollectorRegistry()))
    names = worker.names
    watched = await worker.watchdog.missing()
    assert sorted(watched) == sorted(names.queue(key).name for key in ROUTING_KEYS)
    assert names.queue(PLACE).name in watched
    assert names.queue(ACTION).name in watched
    partitions = [names.partition_queue(n).name for n in range(names.partitions)]
    assert await EveryConsumer(worker.watchdog, worker.partitions).missing() == [
        *watched,
        *partitions,
    ]
