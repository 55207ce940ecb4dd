"""The harness's AMQP side: a producer that survives broker restarts, and an event recorder.

Plain aio-pika over robust connections, speaking only the public contract.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from yarl import URL

from orders_vocabulary.broker_url import node_urls

log = logging.getLogger("chaos")

COMMANDS_EXCHANGE = "orders"
EVENTS_EXCHANGE = "orders.events"
DEAD_QUEUE = "orders.dead"
HISTORY_STREAM = "orders.events.history"
EVENTS_QUEUE = "chaos.events"
PLACE = "orders.place"
JSON = "application/json"
CHANGE_EVENTS = ("order.placed", "order.status_changed", "order.metadata_updated")

PUBLISH_TIMEOUT = 15.0
PUBLISH_GIVE_UP = 300.0
"""A message whose confirm keeps failing for this long ends the run (the broker is gone)."""

PUBLISH_ERRORS = (*CONNECTION_EXCEPTIONS, TimeoutError)


class NodeRotatingConnection(aio_pika.RobustConnection):
    """A robust connection that, on a lost connection or a failed attempt, moves on to the
    next node of a cluster URL (`amqp://u:p@h1:p1,h2:p2/vhost`), as the service does."""

    def __init__(
        self,
        url: URL,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        nodes: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        self._nodes = [URL(node) for node in nodes] or [URL(url)]
        self._current = 0
        super().__init__(url, loop, **kwargs)

    async def _on_connection_close(self, closing: asyncio.Future[Any]) -> None:
        await super()._on_connection_close(closing)
        if self._close_called or self.is_closed or len(self._nodes) == 1:
            return
        self._current = (self._current + 1) % len(self._nodes)
        following = self._nodes[self._current]
        self.url = self.url.with_host(following.host or "").with_port(following.explicit_port)


async def connect(url: str) -> AbstractRobustConnection:
    """A robust connection that retries every second while the broker is down; with several
    nodes in `url`, the next node on each loss."""
    nodes = node_urls(url)
    return await aio_pika.connect_robust(
        nodes[0],
        reconnect_interval=1.0,
        fail_fast=False,
        connection_class=functools.partial(NodeRotatingConnection, nodes=nodes),
    )


async def connect_any(url: str) -> AbstractConnection:
    """A plain connection to the first node of `url` that accepts one."""
    *others, last = node_urls(url)
    for node in others:
        with contextlib.suppress(aio_pika.exceptions.AMQPError, OSError, TimeoutError):
            return await aio_pika.connect(node)
    return await aio_pika.connect(last)


class Publisher:
    """Publishes persistent commands with publisher confirms; re-publishes unconfirmed ones.

    A lost confirm (broker restart, channel closed, nack, return, timeout) means the message
    may or may not have arrived; publishing it again is safe because the contract
    de-duplicates on `idempotency_key` / `request_id`. `republished` counts the messages that
    needed more than one try, `retries` the extra tries.
    """

    def __init__(self, connection: AbstractRobustConnection, exchange: AbstractExchange) -> None:
        self._connection = connection
        self._exchange = exchange
        self.published: Counter[str] = Counter()
        self.republished: Counter[str] = Counter()
        self.retries = 0

    @classmethod
    async def open(cls, url: str) -> Publisher:
        connection = await connect(url)
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await channel.get_exchange(COMMANDS_EXCHANGE, ensure=False)
        return cls(connection, exchange)

    async def close(self) -> None:
        await self._connection.close()

    async def publish(self, routing_key: str, body: bytes, message_id: str) -> None:
        """Return once the broker confirmed the message (re-publishing as often as needed)."""
        self.published[routing_key] += 1
        deadline = time.monotonic() + PUBLISH_GIVE_UP
        pause = 0.2
        for attempt in itertools.count(1):
            message = aio_pika.Message(
                body,
                message_id=message_id,
                correlation_id=message_id,  # events carry it: which command caused which change
                content_type=JSON,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            )
            try:
                await self._exchange.publish(message, routing_key, timeout=PUBLISH_TIMEOUT)
            except PUBLISH_ERRORS as exc:
                if time.monotonic() > deadline:
                    raise
                log.debug("publish %s failed (%r); again in %.1fs", message_id, exc, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)
            else:
                if attempt > 1:
                    self.republished[routing_key] += 1
                    self.retries += attempt - 1
                return


@dataclass(frozen=True)
class SeenEvent:
    """An event as first delivered: what it is about, and when it arrived (sequence)."""

    event_id: str
    event_type: str
    order_db_id: int | None
    version: int | None
    sequence: int
    correlation_id: str | None
    """The triggering command's: the harness sets it to the command's message id."""


class OrderIdSink(Protocol):
    """Told about placements, by the chaos ref in the placed order's metadata."""

    def learned(self, ref: str, id: int, order_id: int) -> None:
        """An `order.placed` event: the order's database id and public number."""

    def rejected(self, ref: str) -> None:
        """An `order.command_rejected` event for the placement."""


@dataclass
class EventRecorder:
    """Every delivery from a durable queue bound to `orders.events` with `#`."""

    connection: AbstractRobustConnection
    queue: AbstractQueue
    ids: OrderIdSink
    deliveries: int = 0
    malformed: int = 0
    events: dict[str, SeenEvent] = field(default_factory=dict)
    last_delivery: float = field(default_factory=time.monotonic)
    connection_losses: list[float] = field(default_factory=list)
    """When (monotonic) the recorder's connection to the broker was lost."""

    @classmethod
    async def start(cls, url: str, ids: OrderIdSink, *, quorum: bool = False) -> EventRecorder:
        """On a cluster (`quorum`), the queue is a quorum queue, so that no event is dropped
        while one node is down."""
        connection = await connect(url)
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=500)
        arguments = {"x-queue-type": "quorum"} if quorum else None
        queue = await channel.declare_queue(EVENTS_QUEUE, durable=True, arguments=arguments)
        await queue.bind(EVENTS_EXCHANGE, routing_key="#")
        recorder = cls(connection, queue, ids)
        connection.close_callbacks.add(recorder._on_connection_lost)
        await queue.consume(recorder._on_message)
        return recorder

    async def close(self) -> None:
        self.connection.close_callbacks.discard(self._on_connection_lost)
        await self.connection.close()

    def _on_connection_lost(self, _: object, exc: BaseException | None = None) -> None:
        self.connection_losses.append(time.monotonic())

    @property
    def duplicates(self) -> int:
        return self.deliveries - self.malformed - len(self.events)

    def by_type(self) -> Counter[str]:
        return Counter(event.event_type for event in self.events.values())

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self.deliveries += 1
        self.last_delivery = time.monotonic()
        self._record(message.body, message.correlation_id)
        # A lost ack (broker restart) means a redelivery, which is counted as a duplicate.
        with contextlib.suppress(*CONNECTION_EXCEPTIONS):
            await message.ack()

    def _record(self, raw: bytes, correlation_id: str | None) -> None:
        try:
            body = json.loads(raw)
            event_id, event_type = body["event_id"], body["event_type"]
        except (ValueError, KeyError, TypeError):
            self.malformed += 1
            return
        if event_id in self.events:
            return
        order = body.get("order") if isinstance(body.get("order"), dict) else body
        self.events[event_id] = SeenEvent(
            event_id,
            event_type,
            order.get("id"),
            order.get("version"),
            len(self.events),
            correlation_id,
        )
        if event_type == "order.placed" and isinstance(ref := _chaos_ref(order), str):
            self.ids.learned(ref, order["id"], order["order_id"])
        elif event_type == "order.command_rejected" and isinstance(ref := _rejected(body), str):
            self.ids.rejected(ref)


def _rejected(body: dict[str, Any]) -> object:
    """The chaos ref of a rejected placement (None for a rejected action)."""
    return _chaos_ref(body.get("payload")) if body.get("routing_key") == PLACE else None


def _chaos_ref(order: object) -> object:
    """The `chaos_ref` in the metadata of an order (or of a PlaceOrder body)."""
    if not isinstance(order, dict) or not isinstance(order.get("metadata"), dict):
        return None
    return order["metadata"].get("chaos_ref")


async def statuses_reply(channel: AbstractChannel, timeout: float) -> bool:  # noqa: ASYNC109
    """Whether an `orders.statuses` request gets a successful reply within `timeout`."""
    replies = await channel.declare_queue("", exclusive=True, auto_delete=True)
    correlation_id = uuid.uuid4().hex
    try:
        exchange = await channel.get_exchange(COMMANDS_EXCHANGE, ensure=False)
        await exchange.publish(
            aio_pika.Message(
                b"{}", content_type=JSON, correlation_id=correlation_id, reply_to=replies.name
            ),
            "orders.statuses",
            mandatory=False,
        )
        async with asyncio.timeout(timeout):
            async with replies.iterator(no_ack=True) as messages:
                async for message in messages:
                    if message.correlation_id == correlation_id:
                        return bool(json.loads(message.body).get("success"))
    except TimeoutError:
        return False
    finally:
        await replies.delete(if_unused=False, if_empty=False)
    return False


@dataclass(frozen=True)
class DeadLetter:
    routing_key: str | None
    error_code: str | None
    error_message: str | None
    message_id: str | None
    body: str


async def drain_dead_letters(url: str) -> list[DeadLetter]:
    """Everything in `orders.dead` (taken off the queue: the vhost is deleted afterwards)."""
    connection = await connect_any(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(DEAD_QUEUE, ensure=True)
        letters: list[DeadLetter] = []
        while (message := await queue.get(no_ack=True, fail=False, timeout=10)) is not None:
            headers: dict[str, Any] = dict(message.headers or {})
            letters.append(
                DeadLetter(
                    routing_key=message.routing_key,
                    error_code=_text(headers.get("x-error-code")),
                    error_message=_text(headers.get("x-error-message")),
                    message_id=message.message_id,
                    body=message.body[:400].decode(errors="replace"),
                )
            )
        return letters


def _text(value: object) -> str | None:
    if value is None:
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
