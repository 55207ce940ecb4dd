"""The worker's own consumers (service/worker/consumers.py: `orders.place`'s, the action
intake's) stopping on SIGTERM against the real RabbitMQ: no more deliveries are taken, those
in hand finish, and nothing is lost: whatever is unacked when the channel closes is
requeued."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection

from service.worker.consumers import QueueConsumer
from tests.e2e.waiting import eventually

QUEUE = "own.stop"  # the test vhost goes at the end of the session
MESSAGES = 5
PREFETCH = 2


class Blocking:
    """A handler that acks each delivery once `release` is set; `in_hand` is set once it
    holds a prefetch's worth."""

    def __init__(self) -> None:
        self.started = 0
        self.acked = 0
        self.in_hand = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, raw: AbstractIncomingMessage) -> None:
        self.started += 1
        if self.started == PREFETCH:
            self.in_hand.set()
        await self.release.wait()
        await raw.ack()
        self.acked += 1


@pytest.fixture
async def queue(connection: AbstractRobustConnection) -> AsyncIterator[AbstractQueue]:
    channel = await connection.channel()
    queue = await channel.declare_queue(QUEUE)
    await queue.purge()
    for n in range(MESSAGES):
        await channel.default_exchange.publish(aio_pika.Message(b"%d" % n), routing_key=QUEUE)
    yield queue
    await queue.delete(if_unused=False, if_empty=False)
    await channel.close()


async def queued(queue: AbstractQueue, count: int) -> bool:
    """Whether `count` messages are ready in `queue` (none unacked by a consumer)."""
    return (await queue.declare()).message_count == count


async def holding(connection: AbstractRobustConnection) -> tuple[Blocking, QueueConsumer]:
    """A consumer of the queue whose handler holds the `PREFETCH` deliveries it got."""
    handler = Blocking()
    consumer = QueueConsumer(QUEUE, handler, lambda: connection, prefetch=PREFETCH)
    await consumer.start(connection)
    await asyncio.wait_for(handler.in_hand.wait(), 10)
    return handler, consumer


async def test_stop_lets_the_deliveries_in_hand_finish_and_leaves_the_rest_queued(
    connection: AbstractRobustConnection, queue: AbstractQueue
) -> None:
    handler, consumer = await holding(connection)

    stopping = asyncio.create_task(consumer.stop(grace=10))
    await asyncio.sleep(0.2)
    assert not stopping.done()  # waits for the two in hand
    handler.release.set()
    await asyncio.wait_for(stopping, 10)

    assert handler.acked == PREFETCH
    assert not await consumer.attached()
    await eventually(lambda: queued(queue, MESSAGES - PREFETCH), timeout=10, what="the rest")
    assert handler.started == PREFETCH


async def test_stop_after_the_grace_requeues_what_did_not_finish(
    connection: AbstractRobustConnection, queue: AbstractQueue
) -> None:
    handler, consumer = await holding(connection)

    await asyncio.wait_for(consumer.stop(grace=0.2), 10)

    await eventually(lambda: queued(queue, MESSAGES), timeout=10, what="all requeued")
    handler.release.set()  # too late: their acks fail on the closed channel
    assert handler.acked == 0
