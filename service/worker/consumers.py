"""Queues the worker consumes itself, with plain aio-pika consumers: every routing key's
(`orders.place`, the queries, the action intake `orders.action`) and the action partitions
(service/worker/partitions.py).

FastStream's per-message path (its parser, fast_depends, the logging, acknowledgement and
Prometheus middlewares) cost about as much CPU as placing the order itself, and a sixth of
a get's, so no queue takes it: each delivery goes straight to its handler, which hands it
to the courier (service/worker/delivery.py). Readiness checks every consumer; the AsyncAPI
document still shows them as subscribers (service/worker/orders.py, `catalogue_router`),
the watchdog restarts them (`OwnConsumer`, service/worker/watchdog.py) and `ConsumeMetrics`
counts in FastStream's `received_*` series.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import cast

from aio_pika import IncomingMessage
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from faststream.message import StreamMessage
from faststream.rabbit.message import RabbitMessage

from service.metrics import ConsumeMetrics
from service.worker import acks

log = logging.getLogger(__name__)

Handle = Callable[[AbstractIncomingMessage], Awaitable[None]]
"""What becomes of one delivery: it acks, nacks or leaves it unacked itself."""


class Delivered(RabbitMessage):
    """A delivery of the worker's own consumers: its ack goes out with the others of its
    channel done at the same time (service/worker/acks.py); a nack or reject goes at once,
    and is recorded as settled once its frame is queued."""

    async def ack(self, multiple: bool = False) -> None:
        _single(multiple)
        await StreamMessage.ack(self)
        if not self.raw_message.locked:
            await acks.ack(self.raw_message)

    async def nack(self, multiple: bool = False, requeue: bool = True) -> None:
        _single(multiple)
        await super().nack(requeue=requeue)
        acks.settled(self.raw_message)

    async def reject(self, requeue: bool = False) -> None:
        await super().reject(requeue=requeue)
        acks.settled(self.raw_message)


def _single(multiple: bool) -> None:
    """A delivery settles itself alone: a `multiple` ack or nack would settle the deliveries
    of its channel still in work too (the channel's acks already go together, acks.py)."""
    if multiple:
        raise ValueError("a delivery is acked or nacked on its own, not with `multiple`")


def delivered(raw: AbstractIncomingMessage) -> RabbitMessage:
    """A raw delivery as the courier takes it (aio-pika's consumers get `IncomingMessage`s)."""
    return Delivered(
        body=raw.body,
        headers=raw.headers,
        reply_to=raw.reply_to or "",
        content_type=raw.content_type,
        message_id=raw.message_id or "",
        correlation_id=raw.correlation_id or "",
        raw_message=cast(IncomingMessage, raw),
    )


class QueueConsumer:
    """One queue, consumed on a channel of its own with `prefetch`, each delivery handed to
    `handle` (counted by `metrics`, as FastStream's middleware would)."""

    def __init__(
        self,
        queue: str,
        handle: Handle,
        connection: Callable[[], AbstractRobustConnection | None],
        *,
        prefetch: int,
        metrics: ConsumeMetrics | None = None,
    ) -> None:
        self.queue = queue
        self._handle = handle
        self._connection = connection
        self._prefetch = prefetch
        self._metrics = metrics
        self._channel: AbstractRobustChannel | None = None
        self._consuming: tuple[AbstractQueue, str] | None = None
        self._stopping = False
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def start(self, connection: AbstractRobustConnection) -> None:
        """Consume on a new channel. The queue (declared with its arguments at start-up,
        service/bootstrap.py) is declared again passively through the robust channel, so
        that its consumer comes back after a reconnection; a queue taken with
        get_queue(ensure=False) would not."""
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=self._prefetch)
        queue = await channel.declare_queue(self.queue, passive=True)
        self._consuming = (queue, await queue.consume(self._deliver))
        self._channel = channel

    @property
    def channel(self) -> AbstractRobustChannel | None:
        """The channel it consumes on; None before it starts and once it is closed."""
        return self._channel

    async def attached(self) -> bool:
        """Whether the consumer is registered on an open channel."""
        try:
            underlay = None if self._channel is None else await self._channel.get_underlay_channel()
        except Exception:  # closed, or reconnecting
            return False
        return (
            underlay is not None
            and not underlay.is_closed
            and bool(getattr(underlay, "consumers", None))
        )

    async def restart(self) -> None:
        """Consume again on a new channel (the consumer was lost): closing the old one hands
        back what it held, in its place."""
        connection = self._connection()
        if connection is None:
            raise RuntimeError("the broker is not connected")
        await self.close()
        await self.start(connection)

    async def close(self) -> None:
        """Close the channel without cancelling the consumer first: RabbitMQ requeues the
        deliveries still unacked, in their place (before a single active consumer's
        successor takes over)."""
        channel, self._channel, self._consuming = self._channel, None, None
        if channel is not None:
            with contextlib.suppress(Exception):
                await channel.close()

    async def stop(self, grace: float) -> None:
        """Shutting down, while the broker can still publish: cancel the consumer, let the
        deliveries in hand finish (up to `grace` seconds), then close the channel. Whatever
        is still unacked (arrived after the cancel, or unfinished) is requeued."""
        self._stopping = True
        if self._consuming is not None:
            queue, tag = self._consuming
            with contextlib.suppress(Exception):  # a channel already closed holds nothing
                await queue.cancel(tag)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), grace)
        await self.close()

    async def _deliver(self, raw: AbstractIncomingMessage) -> None:
        if self._stopping:
            return  # left unacked: requeued when the channel closes
        self._in_flight += 1
        self._idle.clear()
        try:
            if self._metrics is None:
                await self._handle(raw)
            else:
                await self._metrics.consume(raw, self._handle(raw))
        except Exception:  # whatever the handler left unsettled is its own policy's
            log.exception("could not handle a message from %s", self.queue)
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()
