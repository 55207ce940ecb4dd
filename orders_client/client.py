"""`OrdersClient`: typed request/reply, events and dead letters over the orders contract.

One connection and one channel with publisher confirms; replies come back on one
exclusive, server-named queue and are matched to their request by `correlation_id` in a
dict of futures, so any number of requests can be in flight at once. Every call has a
timeout. Bodies go out as JSON built from the `schemas` models; replies are decoded with
floats as `Decimal` and validated into the same models.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Self, TypeVar

import aio_pika
import aio_pika.exceptions
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
)
from pydantic import BaseModel, TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from orders_client.errors import (
    ConnectionLost,
    OrdersError,
    RequestTimeout,
    UnexpectedReply,
    Unroutable,
    error_from_reply,
)
from orders_client.events import EventStream, OrderEvent, Since
from orders_vocabulary.broker_url import node_urls
from schemas import (
    CancelOrder,
    CompleteOrder,
    ListOrders,
    OrderStatsQuery,
    OrderView,
    Pagination,
    PlaceOrder,
    StatsView,
    UpdateMetadata,
    UpdateStatus,
)
from schemas.types import Status

Q = TypeVar("Q", bound=BaseModel)
T = TypeVar("T")

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_TIMEOUT = 10.0
JSON_CONTENT_TYPE = "application/json"
REPLAYED_PLACE_MESSAGE = "Order already placed"

Action = UpdateStatus | CancelOrder | CompleteOrder | UpdateMetadata
_STATUSES_ADAPTER: TypeAdapter[list[Status]] = TypeAdapter(list[Status])
_ORDER_ADAPTER: TypeAdapter[OrderView] = TypeAdapter(OrderView)
_ORDERS_ADAPTER: TypeAdapter[list[OrderView]] = TypeAdapter(list[OrderView])
_STATS_ADAPTER: TypeAdapter[StatsView] = TypeAdapter(StatsView)
# Headers the worker adds when it dead-letters; a replay starts afresh without them.
_DEAD_LETTER_HEADERS = (
    "x-error-code",
    "x-error-message",
    "x-attempts",
    "x-last-error",
    "x-ignored-headers",
    "x-death",
)


def encode_json(body: Any) -> bytes:
    """Compact UTF-8 JSON; `Decimal` goes out as a decimal string (exact)."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, default=_default).encode()


def _default(value: object) -> object:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def decode_json(raw: bytes) -> Any:
    """JSON with floats as `Decimal`, so money stays exact."""
    return json.loads(raw.decode(), parse_float=Decimal)


def body_of(model: BaseModel) -> dict[str, Any]:
    """The wire body of a command or query: the fields the caller set, as JSON."""
    return model.model_dump(mode="json", by_alias=True, exclude_unset=True)


@dataclass(frozen=True)
class Placed:
    """The outcome of placing: the order, and whether this call created it."""

    order: OrderView
    created: bool


_PAGE_INFO_ADAPTER: TypeAdapter[Pagination] = TypeAdapter(Pagination)


@dataclass(frozen=True)
class OrdersPage:
    """One page of `orders.list`; in cursor mode `current_page` is None."""

    orders: list[OrderView]
    total: int
    per_page: int
    last_page: int
    current_page: int | None
    next_cursor: str | None


@dataclass(frozen=True)
class DeadLetter:
    """A message in `orders.dead`; `position` is its place in the queue, from 1."""

    position: int
    routing_key: str
    body: bytes
    headers: dict[str, Any]
    message_id: str | None
    correlation_id: str | None
    content_type: str | None

    @property
    def error_code(self) -> str | None:
        value = self.headers.get("x-error-code")
        return None if value is None else str(value)

    @property
    def error_message(self) -> str | None:
        value = self.headers.get("x-error-message")
        return None if value is None else str(value)

    @property
    def attempts(self) -> int | None:
        value = self.headers.get("x-attempts")
        return value if isinstance(value, int) else None

    def matches(self, ref: str) -> bool:
        """`ref` is the message's `message_id` or its position in the queue."""
        return ref == self.message_id or ref == str(self.position)


def _text(value: object) -> object:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


class OrdersClient:
    """Async client of the orders service.

    ```python
    async with OrdersClient("amqp://guest:guest@127.0.0.1:5672/") as orders:
        order = await orders.place(PlaceOrder(...))
        order = await orders.act(UpdateStatus(id=order.id, action="update_status",
                                              status="in_progress"))
    ```

    `url` may name every node of a RabbitMQ cluster, `amqp://user:password@host1:5672,
    host2:5672/vhost`: the client connects to the first node that answers.

    Every call takes `timeout` (seconds; default the client's) and raises
    `RequestTimeout` when no reply comes in time; error replies raise the `OrdersError`
    subclass of their code (`OrderNotFound`, `InvalidTransition`, `VersionConflict`, ...).
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        exchange: str = "orders",
        events_exchange: str = "orders.events",
        dead_letter_queue: str = "orders.dead",
        history_stream: str = "orders.events.history",
    ) -> None:
        node_urls(url)  # a malformed URL fails here (BrokerUrlError), not at first use
        self.url = url
        self.timeout = timeout
        self.exchange_name = exchange
        self.events_exchange_name = events_exchange
        self.dead_letter_queue_name = dead_letter_queue
        self.history_stream_name = history_stream
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._reply_queue: AbstractQueue | None = None
        self._exchange: AbstractExchange | None = None
        self._pending: dict[str, asyncio.Future[AbstractIncomingMessage]] = {}
        self._open_lock = asyncio.Lock()

    # -- connection -------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Open the connection, the channel and the reply queue (also done on first use)."""
        await self._ensure_open()

    async def close(self) -> None:
        self._fail_pending(ConnectionLost("the client was closed"))
        if self._connection is not None and not self._connection.is_closed:
            await self._connection.close()
        self._connection = self._channel = None
        self._reply_queue = None
        self._exchange = None

    async def _ensure_open(self) -> tuple[AbstractChannel, AbstractQueue, AbstractExchange]:
        async with self._open_lock:
            try:
                async with asyncio.timeout(self.timeout):
                    return await self._open()
            except TimeoutError:
                raise ConnectionLost(f"cannot connect to RabbitMQ within {self.timeout}s") from None
            except (OSError, aio_pika.exceptions.AMQPError) as exc:
                raise ConnectionLost(f"cannot connect to RabbitMQ: {exc}") from exc

    async def _open(self) -> tuple[AbstractChannel, AbstractQueue, AbstractExchange]:
        if self._connection is None or self._connection.is_closed:
            self._connection = await _connect_any(self.url)
            self._connection.close_callbacks.add(self._on_closed)
            self._channel = None
        if (
            self._channel is None
            or self._channel.is_closed
            or self._reply_queue is None
            or self._exchange is None
        ):
            channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
            channel.close_callbacks.add(self._on_closed)
            reply_queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
            await reply_queue.consume(self._on_reply, no_ack=True)
            self._exchange = await channel.get_exchange(self.exchange_name, ensure=False)
            self._channel, self._reply_queue = channel, reply_queue
        return self._channel, self._reply_queue, self._exchange

    def _on_closed(self, _sender: object, exc: BaseException | None) -> None:
        reason = f": {exc}" if exc else ""
        self._fail_pending(ConnectionLost(f"the connection to RabbitMQ closed{reason}"))

    def _fail_pending(self, error: OrdersError) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        future = self._pending.pop(message.correlation_id or "", None)
        if future is not None and not future.done():
            future.set_result(message)
        # Anything else is a late reply to a request that timed out: dropped.

    # -- request/reply ----------------------------------------------------------------------

    async def request(
        self,
        routing_key: str,
        body: Mapping[str, Any] | BaseModel,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - every call has a timeout
        message_id: str | None = None,
    ) -> dict[str, Any]:
        """Publish `body` to the commands exchange with `reply_to`; return the reply envelope.

        Raises the `OrdersError` of the reply's error code, `RequestTimeout`, or
        `ConnectionLost`. `message_id` defaults to a fresh uuid4 (a redelivery is then
        recognised by the service).
        """
        seconds = self.timeout if timeout is None else timeout
        payload = body_of(body) if isinstance(body, BaseModel) else dict(body)
        correlation_id = uuid.uuid4().hex
        future: asyncio.Future[AbstractIncomingMessage] = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(seconds):
                _, reply_queue, exchange = await self._ensure_open()
                self._pending[correlation_id] = future
                await self._publish(
                    exchange,
                    routing_key,
                    aio_pika.Message(
                        encode_json(payload),
                        content_type=JSON_CONTENT_TYPE,
                        correlation_id=correlation_id,
                        message_id=message_id or str(uuid.uuid4()),
                        reply_to=reply_queue.name,
                    ),
                )
                reply = await future
        except TimeoutError:
            raise RequestTimeout(
                f"no reply to {routing_key} within {seconds:g}s (correlation_id={correlation_id})"
            ) from None
        finally:
            self._pending.pop(correlation_id, None)
        return _envelope(reply)

    async def _publish(
        self, exchange: AbstractExchange, routing_key: str, message: aio_pika.Message
    ) -> None:
        try:
            await exchange.publish(message, routing_key=routing_key, mandatory=True)
        except (aio_pika.exceptions.DeliveryError, aio_pika.exceptions.PublishError) as exc:
            raise Unroutable(
                f"{routing_key} was not routed by exchange {exchange.name!r}: "
                "is the worker running?"
            ) from exc
        except aio_pika.exceptions.ChannelClosed as exc:
            raise ConnectionLost(f"the broker refused {routing_key}: {exc}") from exc

    # -- commands ---------------------------------------------------------------------------

    async def place_order(
        self,
        command: PlaceOrder,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
        message_id: str | None = None,
    ) -> Placed:
        """Place an order; `created` is False when its `idempotency_key` was placed before
        (with the same body; another body raises `IdempotencyConflict`)."""
        reply = await self.request("orders.place", command, timeout=timeout, message_id=message_id)
        return Placed(
            _model(_ORDER_ADAPTER, reply.get("data")),
            reply.get("message") != REPLAYED_PLACE_MESSAGE,
        )

    async def place(
        self,
        command: PlaceOrder,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
        message_id: str | None = None,
    ) -> OrderView:
        """Place an order; returns it (the first one for a repeated `idempotency_key`)."""
        return (await self.place_order(command, timeout=timeout, message_id=message_id)).order

    async def act(
        self,
        action: Action,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
        message_id: str | None = None,
    ) -> OrderView:
        """Apply an action (`UpdateStatus`, `CancelOrder`, ...); returns the order after it."""
        reply = await self.request("orders.action", action, timeout=timeout, message_id=message_id)
        return _model(_ORDER_ADAPTER, reply.get("data"))

    # -- queries ----------------------------------------------------------------------------

    async def get(
        self,
        id: int | None = None,
        *,
        order_id: int | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> OrderView:
        """One order by database `id` or public `order_id`; `OrderNotFound` if none."""
        body = {"id": id} if order_id is None else {"order_id": order_id}
        reply = await self.request("orders.get", body, timeout=timeout)
        return _model(_ORDER_ADAPTER, reply.get("data"))

    async def list(
        self,
        query: ListOrders | None = None,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
        **filters: Any,
    ) -> OrdersPage:
        """One page of orders: `list(ListOrders(...))` or `list(customer_id=..., page=2)`."""
        return await self._page(_merge(ListOrders, query, filters), timeout)

    async def iter_orders(
        self,
        query: ListOrders | None = None,
        *,
        per_page: int = 100,
        timeout: float | None = None,  # noqa: ASYNC109 - per page
        **filters: Any,
    ) -> AsyncIterator[OrderView]:
        """Every matching order, page after page (keyset paging: stable while orders arrive)."""
        body = body_of(_merge(ListOrders, query, filters))
        body.pop("page", None)
        body.setdefault("per_page", per_page)
        body["cursor"] = ""
        while True:
            page = await self._page(ListOrders.model_validate(body), timeout)
            for order in page.orders:
                yield order
            if not page.next_cursor or not page.orders:
                return
            body["cursor"] = page.next_cursor

    async def _page(self, query: ListOrders, timeout: float | None) -> OrdersPage:  # noqa: ASYNC109
        reply = await self.request("orders.list", query, timeout=timeout)
        orders = _model(_ORDERS_ADAPTER, reply.get("data"))
        info = _model(_PAGE_INFO_ADAPTER, reply.get("pagination"))
        return OrdersPage(
            orders=orders,
            total=info.total,
            per_page=info.per_page,
            last_page=info.last_page,
            current_page=info.current_page,
            next_cursor=info.next_cursor,
        )

    async def stats(
        self,
        query: OrderStatsQuery | None = None,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
        **filters: Any,
    ) -> StatsView:
        """Counts and revenue: `stats(OrderStatsQuery(...))` or `stats(status="pending")`."""
        reply = await self.request(
            "orders.stats", _merge(OrderStatsQuery, query, filters), timeout=timeout
        )
        return _model(_STATS_ADAPTER, reply.get("data"))

    async def statuses(
        self,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> builtins.list[Status]:
        """The eight statuses, in the contract's order."""
        reply = await self.request("orders.statuses", {}, timeout=timeout)
        return _model(_STATUSES_ADAPTER, reply.get("data"))

    # -- events -----------------------------------------------------------------------------

    def events(
        self,
        pattern: str = "order.#",
        *,
        since: Since | None = None,
        id: int | None = None,
        order_id: int | None = None,
        customer_id: str | None = None,
        follow: bool = True,
        max_buffer: int = 10_000,
    ) -> EventStream:
        """Typed events whose routing key matches `pattern`, de-duplicated on `event_id`.

        Without `since`: live events from `orders.events`, from the moment of subscribing.
        With `since`: the event history (the stream `orders.events.history`) from there on,
        then live events as they are published, with neither gap nor repeat between them.
        `since` is `"first"` (the oldest event kept), a datetime (or a timedelta before
        now), an offset (`events.position + 1` resumes after the last event read), `"last"`
        or `"next"`. With `follow=False` the read ends at the end of the history.

        `id`, `order_id` and `customer_id` keep the events of one order or customer (a
        metadata update names no customer: the order's earlier events, or `orders.get`,
        tell it).

        Use `async with client.events() as events:` to be subscribed before you act, then
        `async for event in events` (or `await events.next(timeout=...)`). Iterating without
        `async with` subscribes on the first iteration.
        """
        return EventStream(
            self,
            pattern,
            since=since,
            id=id,
            order_id=order_id,
            customer_id=customer_id,
            follow=follow,
            max_buffer=max_buffer,
        )

    async def _connection_now(self) -> AbstractConnection:
        await self._ensure_open()
        assert self._connection is not None
        return self._connection

    # -- dead letters -----------------------------------------------------------------------

    async def dead_letters(self, *, limit: int | None = None) -> builtins.list[DeadLetter]:
        """The messages in the dead-letter queue, oldest first; the queue is left as it was."""
        async with self._browse(limit) as (_, letters):
            return [letter for letter, _message in letters]

    async def replay_dead_letters(
        self, refs: Sequence[str] | None = None, *, body: bytes | None = None
    ) -> builtins.list[DeadLetter]:
        """Publish dead letters again to the commands exchange with their routing key.

        `refs` selects by `message_id` or position (all when None); `body` replaces the
        body of the one selected message (a fixed version). The replayed message keeps its
        `message_id` (so a replay of a replay is still applied once) and loses the
        dead-letter headers; it is removed from the queue once the broker confirmed the
        publish. Returns the letters replayed.
        """
        _, _, exchange = await self._ensure_open()
        replayed: builtins.list[DeadLetter] = []
        async with self._browse(None) as (_, letters):
            chosen = [(d, m) for d, m in letters if refs is None or any(map(d.matches, refs))]
            if body is not None and len(chosen) != 1:
                raise OrdersError(
                    f"a replacement body needs exactly one dead letter, {len(chosen)} selected",
                    code="bad_request",
                )
            for letter, message in chosen:
                headers = {
                    key: value
                    for key, value in (message.headers or {}).items()
                    if key not in _DEAD_LETTER_HEADERS
                    and not key.startswith(("x-first-death", "x-last-death"))
                }
                await self._publish(
                    exchange,
                    letter.routing_key,
                    aio_pika.Message(
                        letter.body if body is None else body,
                        headers=headers,
                        content_type=letter.content_type or JSON_CONTENT_TYPE,
                        message_id=letter.message_id or str(uuid.uuid4()),
                        correlation_id=letter.correlation_id,
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                )
                await message.ack()
                replayed.append(letter)
        return replayed

    async def purge_dead_letters(self, refs: Sequence[str] | None = None) -> int:
        """Delete dead letters (all when `refs` is None); returns how many."""
        if refs is None:
            connection = await self._connection_now()
            channel = await connection.channel()
            try:
                queue = await channel.get_queue(self.dead_letter_queue_name, ensure=True)
                result = await queue.purge()
                return int(result.message_count or 0)
            finally:
                await channel.close()
        removed = 0
        async with self._browse(None) as (_, letters):
            for letter, message in letters:
                if any(map(letter.matches, refs)):
                    await message.ack()
                    removed += 1
        return removed

    def _browse(self, limit: int | None) -> _Browse:
        return _Browse(self, limit)


class _Browse:
    """Takes dead letters off the queue unacknowledged; closing the channel puts back
    whatever was not acked, in its original place."""

    def __init__(self, client: OrdersClient, limit: int | None) -> None:
        self._client = client
        self._limit = limit
        self._channel: AbstractChannel | None = None

    async def __aenter__(
        self,
    ) -> tuple[AbstractChannel, list[tuple[DeadLetter, AbstractIncomingMessage]]]:
        connection = await self._client._connection_now()
        self._channel = channel = await connection.channel()
        try:
            async with asyncio.timeout(self._client.timeout):
                queue = await channel.get_queue(self._client.dead_letter_queue_name, ensure=True)
        except aio_pika.exceptions.ChannelClosed as exc:
            raise OrdersError(
                f"queue {self._client.dead_letter_queue_name!r} does not exist", code="not_found"
            ) from exc
        except TimeoutError:
            raise RequestTimeout("the dead-letter queue did not answer") from None
        letters: list[tuple[DeadLetter, AbstractIncomingMessage]] = []
        while self._limit is None or len(letters) < self._limit:
            message = await queue.get(no_ack=False, fail=False, timeout=self._client.timeout)
            if message is None:
                break
            letter = DeadLetter(
                position=len(letters) + 1,
                routing_key=message.routing_key or "",
                body=message.body,
                headers={k: _text(v) for k, v in (message.headers or {}).items()},
                message_id=message.message_id,
                correlation_id=message.correlation_id,
                content_type=message.content_type,
            )
            letters.append((letter, message))
        return channel, letters

    async def __aexit__(self, *exc_info: object) -> None:
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()


def _merge(model: type[Q], query: Q | None, filters: Mapping[str, Any]) -> Q:
    if query is None:
        return model.model_validate(filters)
    if not filters:
        return query
    return model.model_validate({**query.model_dump(exclude_unset=True), **filters})


def _model(adapter: TypeAdapter[T], data: Any) -> T:
    try:
        return adapter.validate_python(data)
    except PydanticValidationError as exc:
        raise UnexpectedReply(f"reply does not match the contract: {exc}") from exc


def _envelope(reply: AbstractIncomingMessage) -> dict[str, Any]:
    try:
        envelope = decode_json(reply.body)
    except ValueError as exc:
        raise UnexpectedReply(f"reply is not JSON: {reply.body[:200]!r}") from exc
    if not isinstance(envelope, dict):
        raise UnexpectedReply(f"reply is not a JSON object: {reply.body[:200]!r}")
    if envelope.get("success") is True:
        return envelope
    error = envelope.get("error")
    if envelope.get("success") is False and isinstance(error, dict):
        return _raise(envelope, error)
    raise UnexpectedReply(f"reply without success/error: {reply.body[:200]!r}")


def _raise(envelope: dict[str, Any], error: dict[str, Any]) -> dict[str, Any]:
    message = envelope.get("message")
    raise error_from_reply(
        str(message) if message else str(error.get("code")),
        str(error.get("code")),
        error.get("details"),
    )


__all__ = [
    "Action",
    "DeadLetter",
    "EventStream",
    "OrderEvent",
    "OrdersClient",
    "OrdersPage",
    "Placed",
]


async def _connect_any(url: str) -> AbstractConnection:
    """A connection to the first node of `url` that accepts one (a cluster's nodes go in one
    URL: `amqp://user:password@host1:5672,host2:5672/vhost`); the last error when none does.
    The next connection, after a loss, starts again from the first node."""
    *others, last = node_urls(url)
    for node in others:
        try:
            return await aio_pika.connect(node)
        except (OSError, aio_pika.exceptions.AMQPError):
            continue
    return await aio_pika.connect(last)
