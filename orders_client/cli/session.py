"""How a command reaches the service: the global options (`--url`, `--timeout`, the
exchanges, the dead-letter queue and the history stream) and the client session a command
runs its work in."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, TypeVar

import typer

from orders_client.client import DEFAULT_TIMEOUT, DEFAULT_URL, OrdersClient

T = TypeVar("T")


@dataclass(frozen=True)
class Connection:
    url: str
    timeout: float
    exchange: str
    events_exchange: str
    dead_letter_queue: str
    history_stream: str

    def client(self) -> OrdersClient:
        return OrdersClient(
            self.url,
            timeout=self.timeout,
            exchange=self.exchange,
            events_exchange=self.events_exchange,
            dead_letter_queue=self.dead_letter_queue,
            history_stream=self.history_stream,
        )


def options(
    ctx: typer.Context,
    url: Annotated[
        str,
        typer.Option("--url", envvar="ORDERS_AMQP_URL", show_default=False, help="RabbitMQ URL."),
    ] = DEFAULT_URL,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for each reply.", min=0.01)
    ] = DEFAULT_TIMEOUT,
    exchange: Annotated[
        str, typer.Option(envvar="ORDERS_EXCHANGE", help="Commands and queries exchange.")
    ] = "orders",
    events_exchange: Annotated[
        str, typer.Option(envvar="ORDERS_EVENTS_EXCHANGE", help="Events exchange.")
    ] = "orders.events",
    dead_letter_queue: Annotated[
        str, typer.Option(envvar="ORDERS_DEAD_LETTER_QUEUE", help="Dead-letter queue.")
    ] = "orders.dead",
    history_stream: Annotated[
        str, typer.Option(envvar="ORDERS_HISTORY_STREAM", help="Event history stream.")
    ] = "orders.events.history",
) -> None:
    """The app's callback: the global options, kept for the command as its `Connection`."""
    ctx.obj = Connection(url, timeout, exchange, events_exchange, dead_letter_queue, history_stream)


def run(ctx: typer.Context, work: Callable[[OrdersClient], Awaitable[T]]) -> T:
    """Run `work` with a client connected as the global options say; return its result."""
    connection = ctx.find_object(Connection)
    assert connection is not None

    async def session() -> T:
        async with connection.client() as client:
            return await work(client)

    return asyncio.run(session())
