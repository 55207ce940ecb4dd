"""The consumer watchdog against the real RabbitMQ: a consumer that vanished is started again,
a FastStream subscriber's or the action router's own."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from aio_pika.abc import AbstractIncomingMessage
from faststream.rabbit import RabbitBroker, RabbitQueue

from service.config import Settings
from service.topology import topology
from service.worker.partitions import ActionRouter
from service.worker.watchdog import ConsumerWatchdog, consumer_attached


async def test_a_vanished_consumer_is_noticed_and_started_again(amqp_url: str) -> None:
    broker = RabbitBroker(amqp_url)
    received: asyncio.Queue[str] = asyncio.Queue()
    queue = RabbitQueue("watchdog.check")  # the test vhost goes at the end of the session

    @broker.subscriber(queue)
    async def handle(body: str) -> None:
        await received.put(body)

    watchdog = ConsumerWatchdog(broker)
    async with broker:
        await broker.start()
        subscriber = broker.subscribers[0]
        assert await watchdog.missing() == []

        # What the reported FastStream bug leaves behind: the queue, without our consumer.
        await subscriber._queue_obj.cancel(subscriber._consumer_tag)  # type: ignore[attr-defined]
        assert await watchdog.missing() == ["watchdog.check"]
        assert not await consumer_attached(subscriber)

        assert await watchdog.check() == ["watchdog.check"]
        assert await watchdog.missing() == []
        await broker.publish("after the restart", queue="watchdog.check")
        assert await asyncio.wait_for(received.get(), 10) == "after the restart"


class RecordingRouter(ActionRouter):
    """The action router's consumer, with routing replaced by a record of what arrived."""

    def __init__(self, broker: RabbitBroker) -> None:
        super().__init__(
            topology(Settings()),
            cast(Any, None),
            cast(Any, None),
            lambda: broker._connection,
            max_message_bytes=1 << 20,
            transient_retry_seconds=1,
            prefetch=4,
        )
        self.queue = "watchdog.actions"  # the test vhost's orders.action is the worker's
        self.routed: asyncio.Queue[bytes] = asyncio.Queue()

    async def route(self, raw: AbstractIncomingMessage) -> None:
        await raw.ack()
        await self.routed.put(raw.body)


async def test_the_action_routers_own_consumer_is_watched_too(amqp_url: str) -> None:
    broker = RabbitBroker(amqp_url)
    router = RecordingRouter(broker)
    watchdog = ConsumerWatchdog(broker, [router])
    async with broker:
        await broker.start()
        connection = broker._connection
        assert connection is not None
        setup = await connection.channel()
        queue = await setup.declare_queue(router.queue)
        await router.start(connection)
        try:
            assert await router.attached()
            assert await watchdog.missing() == []

            assert router._intake is not None
            underlay = await router._intake.get_underlay_channel()
            (tag,) = cast(Any, underlay).consumers  # aiormq's channel
            await underlay.basic_cancel(tag)
            assert await watchdog.missing() == ["watchdog.actions"]

            assert await watchdog.check() == ["watchdog.actions"]
            assert await watchdog.missing() == []
            await broker.publish("after the restart", queue=router.queue)
            assert await asyncio.wait_for(router.routed.get(), 10) == b"after the restart"
        finally:
            await router.close()
            await queue.delete(if_unused=False, if_empty=False)
            await setup.close()
        assert not await router.attached()
