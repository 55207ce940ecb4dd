"""Plain aio-pika clients for the bench: pre-loading a queue, counting events, request/reply
(closed loop and open loop). Nothing here imports the service: this is what a producer or a
consumer on the broker sees."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
)

JSON = "application/json"
PUBLISH_CHUNK = 1000
"""Publishes awaited together when pre-loading (publisher confirms in flight)."""

EXAMPLE_ORDER: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parent.parent / "docs" / "example-order.json").read_text()
)
"""The documented example order (docs/http-api.md, ORIGINAL_API.txt), placed N times."""


def encode(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


async def preload(
    channel: AbstractChannel,
    exchange: AbstractExchange,
    routing_key: str,
    bodies: Sequence[bytes],
) -> None:
    """Publish every body persistent, with a unique `message_id`, confirmed by the broker.

    `channel` must have publisher confirms on (aio-pika's default)."""
    del channel  # the exchange is bound to it; kept in the signature for the reader
    for start in range(0, len(bodies), PUBLISH_CHUNK):
        await asyncio.gather(
            *(
                exchange.publish(
                    aio_pika.Message(
                        body,
                        content_type=JSON,
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        message_id=uuid.uuid4().hex,
                    ),
                    routing_key=routing_key,
                )
                for body in bodies[start : start + PUBLISH_CHUNK]
            )
        )


async def queue_depth(connection: AbstractConnection, name: str) -> int:
    """Ready messages in queue `name` (a passive declare)."""
    channel = await connection.channel()
    try:
        queue = await channel.declare_queue(name, passive=True)
        count = queue.declaration_result.message_count
        return int(count or 0)
    finally:
        await channel.close()


@dataclass
class EventCounter:
    """A private queue bound to an events exchange; counts distinct events (by `message_id`,
    which the contract makes the `event_id`) and notes when the first and last arrived."""

    queue: AbstractQueue
    target: int = 0
    seen: set[str] = field(default_factory=set)
    first: float | None = None
    last: float | None = None
    duplicates: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    @contextlib.asynccontextmanager
    async def bound(
        cls, connection: AbstractConnection, exchange: str, routing_keys: Sequence[str]
    ) -> AsyncIterator[EventCounter]:
        channel = await connection.channel()
        try:
            await channel.set_qos(prefetch_count=0)
            queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
            for key in routing_keys:
                await queue.bind(exchange, routing_key=key)
            counter = cls(queue)
            await queue.consume(counter._on_event, no_ack=True)
            yield counter
        finally:
            await channel.close()

    def expect(self, target: int) -> None:
        self.target = target
        self.seen.clear()
        self.first = self.last = None
        self.duplicates = 0
        self.done.clear()

    async def _on_event(self, message: AbstractIncomingMessage) -> None:
        now = asyncio.get_running_loop().time()
        key = message.message_id or uuid.uuid4().hex
        if key in self.seen:
            self.duplicates += 1
            return
        self.seen.add(key)
        if self.first is None:
            self.first = now
        self.last = now
        if self.target and len(self.seen) >= self.target:
            self.done.set()

    async def wait(self, timeout: float) -> float:  # noqa: ASYNC109 - a bounded wait
        """Seconds from the first to the last event, once `target` distinct events arrived."""
        try:
            await asyncio.wait_for(self.done.wait(), timeout)
        except TimeoutError:
            raise TimeoutError(
                f"{len(self.seen)} of {self.target} events within {timeout:.0f}s"
            ) from None
        assert self.first is not None
        assert self.last is not None
        return self.last - self.first


@dataclass(frozen=True)
class Reply:
    body: dict[str, Any]
    latency_s: float


@dataclass
class _Pending:
    sent_at: float
    future: asyncio.Future[tuple[float, bytes]]


class RpcClient:
    """Requests to the `orders` exchange; replies on an exclusive server-named queue,
    matched by `correlation_id`. The request channel has no publisher confirms, so a
    publish costs one socket write (an open-loop sender must never wait for the broker)."""

    def __init__(self, connection: AbstractConnection, channel: AbstractChannel) -> None:
        self._connection = connection
        self._channel = channel
        self._exchange: AbstractExchange | None = None
        self._reply_queue: AbstractQueue | None = None
        self._pending: dict[str, _Pending] = {}

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, url: str) -> AsyncIterator[RpcClient]:
        connection = await aio_pika.connect(url)
        async with connection:
            channel = await connection.channel(publisher_confirms=False)
            client = cls(connection, channel)
            client._exchange = await channel.get_exchange("orders", ensure=False)
            client._reply_queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
            await client._reply_queue.consume(client._on_reply, no_ack=True)
            yield client

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        now = asyncio.get_running_loop().time()
        pending = self._pending.pop(message.correlation_id or "", None)
        if pending is not None and not pending.future.done():
            pending.future.set_result((now, message.body))

    async def send(self, routing_key: str, body: Any) -> asyncio.Future[tuple[float, bytes]]:
        """Publish one request; the future gets (arrival time, body) of its reply."""
        assert self._exchange is not None
        assert self._reply_queue is not None
        correlation_id = uuid.uuid4().hex
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[float, bytes]] = loop.create_future()
        self._pending[correlation_id] = _Pending(loop.time(), future)
        await self._exchange.publish(
            aio_pika.Message(
                encode(body),
                content_type=JSON,
                correlation_id=correlation_id,
                reply_to=self._reply_queue.name,
                message_id=uuid.uuid4().hex,
            ),
            routing_key=routing_key,
            mandatory=False,  # an unroutable probe simply goes unanswered
        )
        return future

    async def call(self, routing_key: str, body: Any, timeout: float = 300.0) -> Reply:  # noqa: ASYNC109
        """Closed loop: send, wait for the reply; latency from just before the publish."""
        started = asyncio.get_running_loop().time()
        future = await self.send(routing_key, body)
        try:
            arrived, raw = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise TimeoutError(f"no reply to {routing_key} within {timeout:.0f}s") from None
        return Reply(json.loads(raw), arrived - started)

    async def open_loop(
        self,
        routing_key: str,
        body: Callable[[int], Any],
        *,
        rate: float,
        count: int,
        timeout: float = 60.0,  # noqa: ASYNC109
    ) -> OpenLoopResult:
        """Send `count` requests on a fixed schedule (`rate` per second) whatever the replies
        do; latency = reply arrival - scheduled send time (no coordinated omission)."""
        loop = asyncio.get_running_loop()
        start = loop.time() + 0.2
        futures: list[tuple[float, asyncio.Future[tuple[float, bytes]]]] = []
        lags: list[float] = []
        for i in range(count):
            scheduled = start + i / rate
            delay = scheduled - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            lags.append(loop.time() - scheduled)
            futures.append((scheduled, await self.send(routing_key, body(i))))
        deadline = loop.time() + timeout
        latencies: list[float] = []
        sent_index: list[int] = []
        failures = 0
        lost = 0
        for index, (scheduled, future) in enumerate(futures):
            try:
                arrived, raw = await asyncio.wait_for(future, max(0.0, deadline - loop.time()))
            except TimeoutError:
                lost += 1
                continue
            latencies.append(arrived - scheduled)
            sent_index.append(index)
            if json.loads(raw).get("success") is not True:
                failures += 1
        return OpenLoopResult(latencies, lags, failures, lost, sent_index)


@dataclass(frozen=True)
class OpenLoopResult:
    latencies_s: list[float]
    send_lags_s: list[float]
    failures: int
    """Replies with `success: false`."""
    lost: int
    """Requests without a reply within the timeout."""
    sent_index: list[int] = field(default_factory=list)
    """For each latency, the request's position in the schedule."""

    def by_second(self, rate: float) -> list[list[float]]:
        """Latencies grouped by the second of the schedule they were sent in."""
        seconds: list[list[float]] = []
        for index, latency in zip(self.sent_index, self.latencies_s, strict=True):
            slot = int(index / rate)
            while len(seconds) <= slot:
                seconds.append([])
            seconds[slot].append(latency)
        return seconds
