"""The consumer watchdog against the real RabbitMQ: a consumer that vanished is started again."""

from __future__ import annotations

import asyncio

from faststream.rabbit import RabbitBroker, RabbitQueue

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
