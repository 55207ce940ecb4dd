"""A plain AMQP client that speaks only the orders contract.

Nothing here imports the service: requests, events and dead letters are plain
aio-pika messages with UTF-8 JSON bodies, as any producer or consumer would see them.
Numbers in JSON are decoded as :class:`~decimal.Decimal` so money is compared exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
)

JSONObject = dict[str, Any]
Body = Mapping[str, Any] | list[Any] | bytes | str

COMMANDS_EXCHANGE = "orders"
EVENTS_EXCHANGE = "orders.events"
DLX_EXCHANGE = "orders.dlx"
DEAD_QUEUE = "orders.dead"
JSON_CONTENT_TYPE = "application/json"


def encode(body: Body) -> bytes:
    """Bytes are sent as they are, text as UTF-8, anything else as compact JSON."""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body, separators=(",", ":")).encode()


def decode(raw: bytes) -> Any:
    """Decode a JSON body, floats as Decimal (exact), so ``300.00`` == ``Decimal(300)``."""
    return json.loads(raw.decode(), parse_float=Decimal)


def decode_object(raw: bytes) -> JSONObject:
    value = decode(raw)
    assert isinstance(value, dict), f"expected a JSON object, got {raw[:200]!r}"
    return value


def _text(value: object) -> object:
    return value.decode() if isinstance(value, bytes) else value


def _headers(message: AbstractIncomingMessage) -> dict[str, Any]:
    return {key: _text(value) for key, value in (message.headers or {}).items()}


class AmqpClient:
    """Request/reply and fire-and-forget over the ``orders`` exchange.

    Replies come back on an exclusive, auto-delete, server-named queue and are matched to
    their request by ``correlation_id``. A second reply to the same request is recorded in
    :attr:`duplicate_replies` (the contract promises exactly one).
    """

    def __init__(
        self, connection: AbstractConnection, channel: AbstractChannel, reply_queue: AbstractQueue
    ) -> None:
        self.connection = connection
        self.channel = channel
        self.reply_queue = reply_queue
        self.duplicate_replies: list[AbstractIncomingMessage] = []
        self.late_replies: list[AbstractIncomingMessage] = []
        self._pending: dict[str, asyncio.Future[AbstractIncomingMessage]] = {}
        self._answered: set[str] = set()
        self._exchanges: dict[str, AbstractExchange] = {}
        self.url = ""

    @classmethod
    async def connect(cls, url: str) -> AmqpClient:
        connection, channel, reply_queue = await cls._open(url)
        client = cls(connection, channel, reply_queue)
        client.url = url
        await reply_queue.consume(client._on_reply, no_ack=True)
        return client

    @staticmethod
    async def _open(url: str) -> tuple[AbstractConnection, AbstractChannel, AbstractQueue]:
        connection = await aio_pika.connect(url)
        channel = await connection.channel(publisher_confirms=True)
        reply_queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
        return connection, channel, reply_queue

    async def ensure_open(self) -> None:
        """Reconnect after the broker dropped the connection (a broker-restart test)."""
        if not self.connection.is_closed and not self.channel.is_closed:
            return
        self.connection, self.channel, self.reply_queue = await self._open(self.url)
        self._exchanges.clear()
        await self.reply_queue.consume(self._on_reply, no_ack=True)

    async def close(self) -> None:
        for future in self._pending.values():
            future.cancel()
        await self.connection.close()

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        correlation_id = message.correlation_id
        if correlation_id is None:
            self.late_replies.append(message)
            return
        if correlation_id in self._answered:
            self.duplicate_replies.append(message)
            return
        self._answered.add(correlation_id)
        future = self._pending.pop(correlation_id, None)
        if future is None:
            self.late_replies.append(message)
        elif not future.done():
            future.set_result(message)

    async def _exchange(self, name: str) -> AbstractExchange:
        if name not in self._exchanges:
            self._exchanges[name] = await self.channel.get_exchange(name, ensure=False)
        return self._exchanges[name]

    async def publish(
        self,
        routing_key: str,
        body: Body,
        *,
        exchange: str = COMMANDS_EXCHANGE,
        message_id: str | None = None,
        content_type: str | None = JSON_CONTENT_TYPE,
        **props: Any,
    ) -> str:
        """Publish without waiting for anything; returns the ``message_id`` used.

        Like a careful producer, every message gets a fresh ``message_id`` unless given.
        """
        message_id = message_id or uuid.uuid4().hex
        message = aio_pika.Message(
            encode(body), message_id=message_id, content_type=content_type, **props
        )
        await (await self._exchange(exchange)).publish(message, routing_key=routing_key)
        return message_id

    async def request_message(
        self,
        routing_key: str,
        body: Body,
        *,
        timeout: float = 10.0,  # noqa: ASYNC109 - the contract-client API takes a timeout
        message_id: str | None = None,
        correlation_id: str | None = None,
        **props: Any,
    ) -> AbstractIncomingMessage:
        """Publish with ``reply_to`` and a fresh ``correlation_id``; return the reply message."""
        correlation_id = correlation_id or uuid.uuid4().hex
        future: asyncio.Future[AbstractIncomingMessage] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = future
        try:
            await self.publish(
                routing_key,
                body,
                message_id=message_id,
                correlation_id=correlation_id,
                reply_to=self.reply_queue.name,
                **props,
            )
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise TimeoutError(
                f"no reply to {routing_key} (correlation_id={correlation_id}) within {timeout}s"
            ) from None
        finally:
            self._pending.pop(correlation_id, None)

    async def request(
        self,
        routing_key: str,
        body: Body,
        *,
        timeout: float = 10.0,  # noqa: ASYNC109 - the contract-client API takes a timeout
        message_id: str | None = None,
        **props: Any,
    ) -> JSONObject:
        """Request/reply; returns the decoded reply envelope."""
        reply = await self.request_message(
            routing_key, body, timeout=timeout, message_id=message_id, **props
        )
        return decode_object(reply.body)


@dataclass(frozen=True)
class Event:
    routing_key: str
    body: JSONObject
    message_id: str | None
    correlation_id: str | None
    delivery_mode: int | None
    content_type: str | None

    @property
    def event_type(self) -> Any:
        return self.body.get("event_type")

    @property
    def order_db_id(self) -> Any:
        """The database ``id`` of the order the event is about (None for rejections)."""
        order = self.body.get("order")
        if isinstance(order, dict):
            return order.get("id")
        return self.body.get("id")


EventPredicate = Callable[[Event], bool]


@dataclass
class EventCollector:
    """Every event on ``orders.events`` (bound with ``#``) since the collector started.

    Events are de-duplicated on ``event_id`` as the contract tells consumers to do;
    :attr:`redeliveries` counts the copies dropped.
    """

    channel: AbstractChannel
    queue: AbstractQueue
    events: list[Event] = field(default_factory=list)
    malformed: list[bytes] = field(default_factory=list)
    redeliveries: int = 0
    _seen: set[str] = field(default_factory=set)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    @classmethod
    async def start(cls, connection: AbstractConnection) -> EventCollector:
        channel = await connection.channel()
        queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
        await queue.bind(EVENTS_EXCHANGE, routing_key="#")
        collector = cls(channel, queue)
        await queue.consume(collector._on_event, no_ack=True)
        return collector

    async def stop(self) -> None:
        await self.channel.close()

    async def _on_event(self, message: AbstractIncomingMessage) -> None:
        try:
            body = decode_object(message.body)
        except (AssertionError, ValueError):
            self.malformed.append(message.body)
            return
        event_id = body.get("event_id")
        if isinstance(event_id, str):
            if event_id in self._seen:
                self.redeliveries += 1
                return
            self._seen.add(event_id)
        event = Event(
            routing_key=message.routing_key or "",
            body=body,
            message_id=message.message_id,
            correlation_id=message.correlation_id,
            delivery_mode=int(message.delivery_mode) if message.delivery_mode else None,
            content_type=message.content_type,
        )
        async with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    def matching(self, predicate: EventPredicate) -> list[Event]:
        return [event for event in self.events if predicate(event)]

    def for_order(self, order_db_id: int, event_type: str | None = None) -> list[Event]:
        return self.matching(
            lambda e: (
                e.order_db_id == order_db_id and (event_type is None or e.routing_key == event_type)
            )
        )

    async def wait_for_all(
        self,
        predicate: EventPredicate,
        count: int,
        *,
        timeout: float = 10.0,  # noqa: ASYNC109 - the contract-client API takes a timeout
    ) -> list[Event]:
        """Wait until at least ``count`` distinct events match; return all that match."""
        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(lambda: len(self.matching(predicate)) >= count)
        except TimeoutError:
            seen = [(e.routing_key, e.order_db_id, e.body.get("version")) for e in self.events]
            raise AssertionError(
                f"fewer than {count} matching event(s) within {timeout}s; "
                f"{len(seen)} event(s) seen (last 20): {seen[-20:]}"
            ) from None
        return self.matching(predicate)

    async def wait_for(
        self,
        predicate: EventPredicate,
        *,
        timeout: float = 10.0,  # noqa: ASYNC109 - the contract-client API takes a timeout
    ) -> Event:
        """Wait for the first event that matches and return it."""
        return (await self.wait_for_all(predicate, 1, timeout=timeout))[0]


HISTORY_STREAM = "orders.events.history"
TAIL_SETTLE_SECONDS = 0.5


async def read_history(connection: AbstractConnection, *, timeout: float = 30.0) -> list[Event]:  # noqa: ASYNC109
    """Every entry of the event history stream as it is now, repeats included (no
    de-duplication: the tests count copies), read as the docs tell a downstream team: from
    `first`, with a prefetch and manual acks. The end is the offset of the stream's last entry,
    taken from its last chunk (`x-stream-offset: last`) before reading."""
    tail = -1
    async with contextlib.aclosing(
        _stream_messages(connection, "last", TAIL_SETTLE_SECONDS)
    ) as last:
        async for message in last:
            tail = max(tail, _offset(message))
    entries: list[Event] = []
    if tail < 0:
        return entries
    first = _stream_messages(connection, "first", None)
    async with asyncio.timeout(timeout), contextlib.aclosing(first) as messages:
        async for message in messages:
            entries.append(
                Event(
                    routing_key=message.routing_key or "",
                    body=decode_object(message.body),
                    message_id=message.message_id,
                    correlation_id=message.correlation_id,
                    delivery_mode=int(message.delivery_mode) if message.delivery_mode else None,
                    content_type=message.content_type,
                )
            )
            if _offset(message) >= tail:
                break
    return entries


def _offset(message: AbstractIncomingMessage) -> int:
    offset = (message.headers or {}).get("x-stream-offset")
    assert isinstance(offset, int), message.headers
    return offset


async def _stream_messages(
    connection: AbstractConnection, offset: str, settle: float | None
) -> AsyncGenerator[AbstractIncomingMessage]:
    """The stream's messages from `offset`, acked as they are taken; with `settle`, until
    none has come for that many seconds."""
    channel = await connection.channel()
    try:
        await channel.set_qos(prefetch_count=200)
        stream = await channel.get_queue(HISTORY_STREAM, ensure=False)
        arrived: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        await stream.consume(arrived.put, arguments={"x-stream-offset": offset})
        while True:
            try:
                message = await asyncio.wait_for(arrived.get(), settle)
            except TimeoutError:
                return
            await message.ack()
            yield message
    finally:
        await channel.close()


@dataclass(frozen=True)
class DeadLetter:
    routing_key: str | None
    exchange: str | None
    body: bytes
    headers: dict[str, Any]
    message_id: str | None
    correlation_id: str | None


@dataclass
class DeadLetterReader:
    """Reads ``orders.dead`` with basic.get, keeping everything it took off the queue."""

    channel: AbstractChannel
    queue: AbstractQueue
    letters: list[DeadLetter] = field(default_factory=list)

    @classmethod
    async def open(cls, connection: AbstractConnection) -> DeadLetterReader:
        channel = await connection.channel()
        queue = await channel.get_queue(DEAD_QUEUE, ensure=True)
        return cls(channel, queue)

    async def close(self) -> None:
        await self.channel.close()

    async def drain(self) -> None:
        while (message := await self.queue.get(no_ack=False, fail=False, timeout=5)) is not None:
            self.letters.append(
                DeadLetter(
                    routing_key=message.routing_key,
                    exchange=message.exchange,
                    body=message.body,
                    headers=_headers(message),
                    message_id=message.message_id,
                    correlation_id=message.correlation_id,
                )
            )
            await message.ack()

    async def wait_for(
        self,
        predicate: Callable[[DeadLetter], bool],
        *,
        timeout: float = 10.0,  # noqa: ASYNC109 - the contract-client API takes a timeout
    ) -> DeadLetter:
        """Poll the queue (basic.get) until a matching dead letter shows up."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            await self.drain()
            for letter in self.letters:
                if predicate(letter):
                    return letter
            if loop.time() >= deadline:
                raise AssertionError(
                    f"no matching message in {DEAD_QUEUE} within {timeout}s; "
                    f"{len(self.letters)} dead letter(s) seen: "
                    f"{[(d.routing_key, d.headers.get('x-error-code')) for d in self.letters]}"
                )
            await asyncio.sleep(0.1)  # basic.get has no blocking form: poll interval
