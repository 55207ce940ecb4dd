"""The worker's events and replies, published past FastStream: each on a channel of their
own, with publisher confirms, straight through aio-pika.

`RabbitBroker.publish` builds a publish command, runs it through the middlewares and the
producer, and looks the exchange up, for each message: about a third of what publishing an
event cost the worker (docs/benchmarks.md, "Issue 13, step six"), and half of what a reply
cost a get ("Issue 13, step thirteen"). Events and replies are the same messages as
before (an event persistent, `message_id` the event id; a reply transient, to the default
exchange, with the request's `correlation_id`; both JSON), confirmed the same way, and
counted in the same `published_*` series (`PublishMetrics`). Dead letters and retries still
go through the broker.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from aio_pika import DeliveryMode, Message
from aio_pika.abc import AbstractExchange, AbstractRobustChannel, AbstractRobustConnection

from service.adapters.publishing import event_properties
from service.domain.records import PendingEvent
from service.metrics import PublishMetrics


class ConfirmedExchange:
    """An exchange (`""`: the default exchange) on a channel of its own with publisher
    confirms, opened on first use (once; every publish asks for it) and restored by
    aio-pika with the connection."""

    def __init__(
        self, connection: Callable[[], AbstractRobustConnection | None], name: str
    ) -> None:
        self._connection = connection
        self._name = name
        self._channel: AbstractRobustChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._opening = asyncio.Lock()

    async def open(self) -> tuple[AbstractRobustChannel, AbstractExchange]:
        if self._channel is not None and self._exchange is not None:
            return self._channel, self._exchange
        async with self._opening:
            if self._channel is None or self._exchange is None:
                connection = self._connection()
                if connection is None:
                    raise ConnectionError("the broker is not connected")
                channel = await connection.channel(publisher_confirms=True)
                self._exchange = (
                    await channel.get_exchange(self._name, ensure=False)
                    if self._name
                    else channel.default_exchange
                )
                self._channel = channel
            return self._channel, self._exchange


class EventChannel:
    def __init__(
        self,
        connection: Callable[[], AbstractRobustConnection | None],
        exchange: str,
        metrics: PublishMetrics,
    ) -> None:
        self._exchange_name = exchange
        self._exchange = ConfirmedExchange(connection, exchange)
        self._metrics = metrics

    async def publish(self, event: PendingEvent) -> None:
        """Publish persistently and return once the broker confirmed it; a refusal
        (`DeliveryError`) or a lost connection raises."""
        channel, exchange = await self._exchange.open()
        await channel.ready()  # at once while the channel is open; else until restored
        message = Message(
            event.payload, delivery_mode=DeliveryMode.PERSISTENT, **event_properties(event)
        )
        with self._metrics.publishing(self._exchange_name, event.routing_key):
            await exchange.publish(message, routing_key=event.routing_key, mandatory=False)


class ReplyChannel:
    """Replies: to the default exchange with routing key = the request's `reply_to`, as
    FastStream published them (transient, JSON, the request's `correlation_id`, else a new
    one, and the time sent), counted under the destination `reply`."""

    def __init__(
        self, connection: Callable[[], AbstractRobustConnection | None], metrics: PublishMetrics
    ) -> None:
        self._exchange = ConfirmedExchange(connection, "")
        self._metrics = metrics

    async def publish(self, body: bytes, reply_to: str, correlation_id: str | None) -> None:
        """Publish and return once the broker confirmed it (routed to the reply queue, or
        dropped when that queue is gone: nobody waits for it any more)."""
        channel, exchange = await self._exchange.open()
        await channel.ready()
        message = Message(
            body,
            content_type="application/json",
            correlation_id=correlation_id or uuid.uuid4().hex,
            timestamp=datetime.now(UTC),
        )
        with self._metrics.publishing("", reply_to):
            await exchange.publish(message, routing_key=reply_to, mandatory=False)
