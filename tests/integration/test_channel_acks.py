"""The worker's own consumers' acks sent together (service/worker/acks.py), against the real
RabbitMQ: acks done at the same time go out as one multiple ack; a delivery still in work
stops the run (it stays unacked, and only it comes back when the channel closes), and the
acks behind it wait a little for it, then go out one by one; a delivery rejected directly
is passed over without the channel failing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection

from service.worker import acks
from service.worker.consumers import delivered
from tests.e2e.waiting import eventually


class Received:
    """A channel consuming one fresh queue of `count` messages, its deliveries in hand, and
    every `basic_ack` frame it sends recorded as (tag, multiple)."""

    def __init__(self, channel: AbstractChannel, queue: aio_pika.abc.AbstractQueue) -> None:
        self.channel = channel
        self.queue = queue
        self.messages: list[AbstractIncomingMessage] = []
        self.frames: list[tuple[int, bool]] = []

    async def take(self, count: int) -> None:
        async def keep(message: AbstractIncomingMessage) -> None:
            self.messages.append(message)

        async def arrived() -> bool:
            return len(self.messages) == count

        await self.queue.consume(keep)
        await eventually(arrived, timeout=10, what=f"{count} deliveries")
        underlay: Any = await self.channel.get_underlay_channel()
        sent = underlay.basic_ack

        async def recorded(tag: int, multiple: bool = False, wait: bool = True) -> None:
            self.frames.append((tag, multiple))
            await sent(tag, multiple=multiple, wait=wait)

        underlay.basic_ack = recorded

    async def left_after_close(self, connection: AbstractRobustConnection) -> list[bytes]:
        """Close the channel; the bodies RabbitMQ requeued (never acked)."""
        await self.channel.close()
        channel = await connection.channel()
        queue = await channel.declare_queue(self.queue.name, passive=True)
        bodies = []
        while (message := await queue.get(fail=False, no_ack=True)) is not None:
            bodies.append(message.body)
        await channel.close()
        return bodies


@pytest.fixture
async def received(
    connection: AbstractRobustConnection, request: pytest.FixtureRequest
) -> AsyncIterator[Received]:
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=20)
    queue = await channel.declare_queue(
        f"acks.{request.node.name}", arguments={"x-queue-type": "quorum"}, durable=True
    )
    await queue.purge()
    for number in range(1, 6):
        await channel.default_exchange.publish(
            aio_pika.Message(str(number).encode()), routing_key=queue.name
        )
    yield Received(channel, queue)
    cleanup = await connection.channel()  # the test closes its own
    await cleanup.queue_delete(queue.name)
    await cleanup.close()


async def test_acks_done_together_go_out_as_one_multiple_ack(
    received: Received, connection: AbstractRobustConnection
) -> None:
    await received.take(5)

    await asyncio.gather(*(acks.ack(m) for m in reversed(received.messages)))

    assert received.frames == [(5, True)]
    assert await received.left_after_close(connection) == []


async def test_a_delivery_in_work_stops_the_run_and_stays_unacked(
    received: Received, connection: AbstractRobustConnection
) -> None:
    await received.take(5)
    one, two, _, four, five = received.messages

    await asyncio.gather(acks.ack(one), acks.ack(two), acks.ack(four), acks.ack(five))

    assert received.frames == [(2, True), (4, False), (5, False)]
    assert await received.left_after_close(connection) == [b"3"]


async def test_an_ack_behind_a_delivery_in_work_waits_a_little_to_go_out_with_it(
    received: Received, connection: AbstractRobustConnection
) -> None:
    await received.take(5)
    one, two, *_ = received.messages

    later = asyncio.ensure_future(acks.ack(two))
    await asyncio.sleep(acks.HOLD_SECONDS / 3)
    await asyncio.gather(acks.ack(one), later)

    assert received.frames == [(2, True)]
    assert await received.left_after_close(connection) == [b"3", b"4", b"5"]


async def test_a_run_passes_over_acks_sent_singly_once_the_gap_is_acked(
    received: Received, connection: AbstractRobustConnection
) -> None:
    await received.take(5)
    one, two, three, _, five = received.messages
    await asyncio.gather(acks.ack(two), acks.ack(three))
    assert received.frames == [(2, False), (3, False)]  # 1 held on past the hold
    received.frames.clear()

    await asyncio.gather(acks.ack(one), acks.ack(five))

    assert received.frames == [(1, True), (5, False)]  # 1 to 3; 4 still in work
    assert await received.left_after_close(connection) == [b"4"]


async def test_a_rejected_delivery_is_passed_over_and_the_channel_stays_open(
    received: Received, connection: AbstractRobustConnection
) -> None:
    await received.take(5)
    one, two, three, four, five = received.messages
    await delivered(three).reject(requeue=False)

    await asyncio.gather(*(delivered(m).ack() for m in (one, two, four, five)))

    assert received.frames == [(5, True)]  # 3 was settled already: the broker skips it
    await asyncio.sleep(0.2)  # an ack of an unknown tag would close the channel by now
    assert not received.channel.is_closed
    assert await received.left_after_close(connection) == []


async def test_an_ack_on_a_closed_channel_fails_as_a_direct_ack_would(
    received: Received,
) -> None:
    await received.take(5)
    await received.channel.close()

    with pytest.raises(aio_pika.exceptions.ChannelInvalidStateError):
        await acks.ack(received.messages[0])


async def test_a_multiple_ack_or_nack_of_one_delivery_is_refused_and_sends_nothing(
    received: Received, connection: AbstractRobustConnection
) -> None:
    await received.take(5)
    *_, four, five = received.messages

    with pytest.raises(ValueError, match="multiple"):
        await delivered(five).ack(multiple=True)
    with pytest.raises(ValueError, match="multiple"):
        await delivered(four).nack(multiple=True)

    assert received.frames == []
    assert await received.left_after_close(connection) == [b"1", b"2", b"3", b"4", b"5"]
