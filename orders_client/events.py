"""Typed events: live from `orders.events`, or from the event history (the stream
`orders.events.history`) from any point, then live.

`EventStream` is what `OrdersClient.events()` returns. Live, it reads an exclusive queue of its
own bound to the events exchange: it sees what is published from the moment it is subscribed.
With `since`, it reads the stream instead, from `since` on, and keeps reading it: the stream
receives every event as it is published, so history and live events come from one consumer,
in publish order, with no seam between them. Either way events are de-duplicated on
`event_id` (delivery is at least once: the relay may publish an event again after a crash).

Reading a stream over AMQP 0.9.1 takes a prefetch (`basic.qos`) and manual acks: events are
acked once taken from the iterator (together, `ACK_EVERY`), so the broker sends at most
`prefetch` ahead and a slow reader loses nothing. Each delivery carries its offset (header
`x-stream-offset`); the offset of the last event taken is `position`, and
`since=position + 1` resumes after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Literal, Protocol, Self

import aio_pika.exceptions
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage
from pydantic import Field, TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from orders_client.errors import ConnectionLost, OrderNotFound, OrdersError, RequestTimeout
from schemas import (
    OrderCommandRejected,
    OrderMetadataUpdated,
    OrderPlaced,
    OrderStatusChanged,
    OrderView,
)

OrderEvent = OrderPlaced | OrderStatusChanged | OrderMetadataUpdated | OrderCommandRejected
Since = Literal["first", "last", "next"] | datetime | timedelta | int
"""Where a read of the history starts: the oldest event kept (`first`), the last chunk the
broker wrote (`last`), the next event published (`next`), the first event written at or after
a moment (a datetime, or a timedelta before now; whole seconds), or an offset."""


class EventSource(Protocol):
    """What a reader needs of the client (`OrdersClient`): its connection, the names, its
    timeout, and `get` (the customer of an order a metadata update does not name)."""

    timeout: float
    events_exchange_name: str
    history_stream_name: str

    async def _connection_now(self) -> AbstractConnection: ...

    async def get(self, id: int | None = None) -> OrderView: ...


EVENT_ADAPTER: TypeAdapter[OrderEvent] = TypeAdapter(
    Annotated[OrderEvent, Field(discriminator="event_type")]
)
HISTORY_PREFETCH = 500
"""Events the broker sends a history reader ahead of what it has acked."""
ACK_EVERY = 100
"""A history reader acks the events it has taken together (one `multiple` ack), every this
many or whenever it has taken every delivery that arrived."""
DEDUPLICATION_WINDOW = 100_000
"""How many recent event ids a reader remembers to drop repeats (a relay's repeat comes
within seconds of the first copy)."""
TAIL_SETTLE_SECONDS = 0.3
"""How long the probe of the stream's last chunk waits after its last delivery."""
TAIL_PROBE_SECONDS = 2.0
"""How long the probe reads at most: on a busy stream new entries keep coming after the last
chunk, and the tail is then the last one seen by then."""


def offset_argument(since: Since) -> str | int | datetime:
    """The `x-stream-offset` consumer argument of `since` (a datetime goes out as an AMQP
    timestamp: whole seconds; a naive one is taken as UTC)."""
    if isinstance(since, timedelta):
        return datetime.now(UTC) - since
    if isinstance(since, datetime):
        return since if since.tzinfo else since.replace(tzinfo=UTC)
    if isinstance(since, bool) or (isinstance(since, int) and since < 0):
        raise ValueError(f"a stream offset is a number from 0, not {since!r}")
    if isinstance(since, str) and since not in ("first", "last", "next"):
        raise ValueError(f"since is first, last, next, a datetime or an offset, not {since!r}")
    return since


def topic_matches(pattern: str, routing_key: str) -> bool:
    """Whether `routing_key` matches the topic `pattern` as RabbitMQ matches it: words split
    on `.`, `*` one word, `#` zero or more."""
    return _words_match(tuple(pattern.split(".")), tuple(routing_key.split(".")))


def _words_match(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return _words_match(rest, words) or (bool(words) and _words_match(pattern, words[1:]))
    return bool(words) and head in ("*", words[0]) and _words_match(rest, words[1:])


def order_refs(event: OrderEvent) -> tuple[int | None, int | None, str | None]:
    """(id, order_id, customer_id) of the order an event is about, where it says them; a
    rejected command's are those of its payload."""
    if isinstance(event, OrderPlaced):
        return event.order.id, event.order.order_id, event.order.customer_id
    if isinstance(event, OrderStatusChanged):
        return event.id, event.order_id, event.customer_id
    if isinstance(event, OrderMetadataUpdated):
        return event.id, event.order_id, None
    payload = event.payload if isinstance(event.payload, dict) else {}

    def number(name: str) -> int | None:
        value = payload.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    customer = payload.get("customer_id")
    return number("id"), number("order_id"), customer if isinstance(customer, str) else None


class EventStream:
    """Typed events whose routing key matches `pattern`, of one order (`id`, `order_id`) or
    customer (`customer_id`) when given; live, or from `since` in the history then live.

    Bodies that are not a known event are counted in `skipped` and not yielded; so are live
    events that arrive while `max_buffer` are waiting to be taken (the history never drops:
    the broker waits for the reader). With `follow=False` a read of the history ends once it
    has reached the end of the stream as it was when the read began (`tail`).
    """

    def __init__(
        self,
        client: EventSource,
        pattern: str,
        *,
        since: Since | None = None,
        id: int | None = None,
        order_id: int | None = None,
        customer_id: str | None = None,
        follow: bool = True,
        max_buffer: int = 10_000,
    ) -> None:
        self.pattern = pattern
        self.since = since
        self.skipped = 0
        self.position: int | None = None
        """The stream offset of the last event read (yielded or filtered out); None live."""
        self.first: int | None = None
        """The stream offset of the first event read; None live."""
        self.tail: int | None = None
        """The offset of the last event in the stream when the read began (None: it was
        empty, or live): `position >= tail` means the history has been replayed."""
        self._client = client
        self._id, self._order_id, self._customer_id = id, order_id, customer_id
        self._follow = follow
        self._offset = None if since is None else offset_argument(since)
        self._queue: asyncio.Queue[AbstractIncomingMessage | OrdersError] = asyncio.Queue(
            max_buffer if since is None else 0
        )
        self._channel: AbstractChannel | None = None
        self._seen: dict[str, None] = {}
        self._customers: dict[int, str | None] = {}
        self._replayed = asyncio.Event()
        self._unacked = 0

    @property
    def caught_up(self) -> bool:
        """Whether every event that was in the stream when the read began has been read
        (always True live)."""
        if self._offset is None or self.tail is None:
            return True
        if self.position is None:
            return (
                isinstance(self._offset, int)
                and not isinstance(self._offset, bool)
                and (self._offset > self.tail)
            )
        return self.position >= self.tail

    async def replayed(self) -> None:
        """Wait until `caught_up` (live: at once, once subscribed)."""
        await self._replayed.wait()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Subscribe: live, a queue bound from now on; with `since`, a consumer of the
        history stream from there."""
        if self._channel is not None:
            return
        connection = await self._client._connection_now()
        channel = await connection.channel()
        channel.close_callbacks.add(self._on_closed)
        try:
            if self._offset is None:
                queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
                await queue.bind(self._client.events_exchange_name, routing_key=self.pattern)
                await queue.consume(self._on_message, no_ack=True)
            else:
                self.tail = await self._probe_tail()
                await channel.set_qos(prefetch_count=HISTORY_PREFETCH)
                stream = await channel.get_queue(self._client.history_stream_name, ensure=False)
                await stream.consume(
                    self._on_message, no_ack=False, arguments={"x-stream-offset": self._offset}
                )
        except aio_pika.exceptions.ChannelNotFoundEntity as exc:
            if not channel.is_closed:
                await channel.close()
            raise OrdersError(
                f"{self._missing()} does not exist: is the service running?", code="not_found"
            ) from exc
        self._channel = channel
        if self.caught_up:
            self._replayed.set()

    def _missing(self) -> str:
        if self._offset is None:
            return f"exchange {self._client.events_exchange_name!r}"
        return f"stream {self._client.history_stream_name!r}"

    async def _probe_tail(self) -> int | None:
        """The offset of the stream's last event now: read its last chunk on a channel of
        its own until nothing more comes, for `TAIL_PROBE_SECONDS` at most (None when the
        stream is empty)."""
        connection = await self._client._connection_now()
        channel = await connection.channel()
        offsets: asyncio.Queue[int] = asyncio.Queue()

        async def on_last(message: AbstractIncomingMessage) -> None:
            offsets.put_nowait(_offset_of(message) or 0)
            await message.ack()

        try:
            await channel.set_qos(prefetch_count=HISTORY_PREFETCH)
            stream = await channel.get_queue(self._client.history_stream_name, ensure=False)
            await stream.consume(on_last, arguments={"x-stream-offset": "last"})
            tail: int | None = None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TAIL_PROBE_SECONDS):
                    while True:
                        offset = await asyncio.wait_for(offsets.get(), TAIL_SETTLE_SECONDS)
                        tail = offset if tail is None else max(tail, offset)
            return tail
        finally:
            if not channel.is_closed:
                await channel.close()

    async def close(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None and not channel.is_closed:
            channel.close_callbacks.discard(self._on_closed)
            await channel.close()

    def _on_closed(self, _sender: object, exc: BaseException | None) -> None:
        reason = f": {exc}" if exc else ""
        self._put(ConnectionLost(f"the events channel closed{reason}"))

    def _put(self, item: AbstractIncomingMessage | OrdersError) -> None:
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.skipped += 1

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self._put(message)  # nothing awaited first: the deliveries keep their order

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> OrderEvent:
        await self.start()
        while True:
            if not self._follow and self.caught_up:
                raise StopAsyncIteration
            if self._follow or self.position is not None:
                item = await self._queue.get()
            else:  # nothing read yet: an empty read ends after the client's timeout
                try:
                    item = await asyncio.wait_for(self._queue.get(), self._client.timeout)
                except TimeoutError:
                    raise StopAsyncIteration from None
            if isinstance(item, OrdersError):
                raise item
            event = await self._take(item)
            if event is not None:
                return event

    async def _take(self, message: AbstractIncomingMessage) -> OrderEvent | None:
        """The event of one delivery, or None when it is not one to yield (acked either way:
        the reader has it)."""
        try:
            if self._offset is not None:
                self.position = _offset_of(message)
                if self.first is None:
                    self.first = self.position
                if self.caught_up:
                    self._replayed.set()
            try:
                event = EVENT_ADAPTER.validate_python(_decode(message.body))
            except (ValueError, PydanticValidationError):
                self.skipped += 1
                return None
            if event.event_id in self._seen:
                return None
            self._seen[event.event_id] = None
            if len(self._seen) > DEDUPLICATION_WINDOW:
                del self._seen[next(iter(self._seen))]
            if not topic_matches(self.pattern, message.routing_key or event.event_type):
                return None
            return event if await self._matches(event) else None
        finally:
            if self._offset is not None:
                self._unacked += 1
                if self._unacked >= ACK_EVERY or self._queue.empty():
                    self._unacked = 0
                    await message.ack(multiple=True)  # this one and every one before it

    async def _matches(self, event: OrderEvent) -> bool:
        if self._id is None and self._order_id is None and self._customer_id is None:
            return True
        id_, order_id, customer_id = order_refs(event)
        if id_ is not None and customer_id is not None:
            self._customers[id_] = customer_id
        if self._id is not None and id_ != self._id:
            return False
        if self._order_id is not None and order_id != self._order_id:
            return False
        if self._customer_id is None:
            return True
        if customer_id is None and id_ is not None:
            customer_id = await self._customer_of(id_)
        return customer_id == self._customer_id

    async def _customer_of(self, id_: int) -> str | None:
        """The customer of order `id_` for an event that does not name it (a metadata update):
        learnt from its earlier events, or asked of the service once."""
        if id_ not in self._customers:
            try:
                self._customers[id_] = (await self._client.get(id_)).customer_id
            except (OrderNotFound, RequestTimeout):
                self._customers[id_] = None
        return self._customers[id_]

    async def next(self, *, timeout: float | None = None) -> OrderEvent:  # noqa: ASYNC109
        """The next event; `RequestTimeout` if none arrives within `timeout` seconds."""
        seconds = self._client.timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(seconds):
                return await self.__anext__()
        except TimeoutError:
            raise RequestTimeout(
                f"no event matching {self.pattern!r} within {seconds:g}s"
            ) from None


def _offset_of(message: AbstractIncomingMessage) -> int | None:
    offset = (message.headers or {}).get("x-stream-offset")
    return offset if isinstance(offset, int) else None


def _decode(raw: bytes) -> object:
    return json.loads(raw.decode(), parse_float=Decimal)
