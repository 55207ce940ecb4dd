"""Connections to a RabbitMQ cluster: several nodes in one URL, a surviving node on a loss.

`ORDERS_AMQP_URL` may name several nodes, `amqp://user:password@host1:5672,host2:5672/vhost`
(orders_vocabulary/broker_url.py). aio-pika's robust connection reconnects to the one URL it
was given; `NodeRotatingConnection` is that connection, moved to the next node each time a
connection is lost or an attempt fails. Every node is tried once in a row without waiting;
`reconnect_interval` is waited only after a whole round failed. With `fail_fast` (aio-pika's
and FastStream's default), the first connection gives up once every node has failed, not
after the first node. The channels, queues and
consumers are restored on the node reached, as after any reconnection: quorum queues and
exchanges are the cluster's, whichever node the client talks to.

`rabbit_broker` is FastStream's `RabbitBroker` over that connection (FastStream hands its
connection arguments to `aio_pika.connect_robust`, whose `connection_class` picks it);
`connect_any` opens a plain connection to the first node that answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Sequence
from typing import Any

import aio_pika
from aio_pika.abc import AbstractConnection, TimeoutType
from aiormq.connection import parse_bool
from faststream.rabbit import RabbitBroker
from yarl import URL

from orders_vocabulary.broker_url import hosts, node_urls

log = logging.getLogger("service")


class NodeRotatingConnection(aio_pika.RobustConnection):
    """A robust connection that reconnects to the next of `nodes` (URLs) after a loss."""

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
        self._failures = 0
        self._interval: float = 0.0
        # aio-pika's fail-fast gives up when the first attempt fails, on the first node; here
        # it gives up once every node has failed.
        fail_fast = parse_bool(kwargs.get("fail_fast", URL(url).query.get("fail_fast", "1")))
        self._round_fail_fast = fail_fast and len(self._nodes) > 1
        if self._round_fail_fast:
            kwargs["fail_fast"] = False
        self._first_round: asyncio.Future[None] | None = None
        super().__init__(url, loop, **kwargs)

    # The robust connection waits `reconnect_interval` after every failed attempt; here the
    # wait comes only once every node of the round has failed.
    @property
    def reconnect_interval(self) -> float:
        return self._interval if self._failures % len(self._nodes) == 0 else 0.0

    @reconnect_interval.setter
    def reconnect_interval(self, value: float) -> None:
        self._interval = value

    @property
    def node(self) -> str:
        """`host:port` of the node this connection uses (or tries) now."""
        return _address(self.url)

    async def connect(self, timeout: TimeoutType = None) -> None:  # noqa: ASYNC109 - aio-pika's
        if not self._round_fail_fast:
            await super().connect(timeout)
            return
        self._round_fail_fast = False  # the first connection only, as aio-pika's fail-fast
        first_round = self._first_round = self.loop.create_future()
        connecting = asyncio.ensure_future(super().connect(timeout))
        try:
            await asyncio.wait({connecting, first_round}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._first_round = None
            if not connecting.done():
                connecting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await connecting
        if connecting.cancelled():  # every node failed in a row before it connected
            await self.close()
            first_round.result()
        connecting.result()

    async def _on_connected(self) -> None:
        await super()._on_connected()
        self._failures = 0
        log.info("connected to RabbitMQ node %s", self.node)

    async def _on_connection_close(self, closing: asyncio.Future[Any]) -> None:
        """A lost connection, or a failed attempt: the next attempt goes to the next node."""
        await super()._on_connection_close(closing)
        if self._close_called or self.is_closed or len(self._nodes) == 1:
            return
        lost = self.node
        self._failures += 1
        self._current = (self._current + 1) % len(self._nodes)
        following = self._nodes[self._current]
        self.url = self.url.with_host(following.host or "").with_port(following.explicit_port)
        first_round = self._first_round
        if (
            first_round is not None
            and not first_round.done()
            and self._failures >= len(self._nodes)
        ):
            first_round.set_exception(
                aio_pika.exceptions.AMQPConnectionError(
                    f"no RabbitMQ node answered ({', '.join(self._all_nodes())}); "
                    f"the last: {_reason(closing)}"
                )
            )
            return
        log.warning("RabbitMQ node %s lost or unreachable; next: %s", lost, self.node)

    def _all_nodes(self) -> list[str]:
        return [_address(node) for node in self._nodes]


def _address(url: URL) -> str:
    """`host:port` of `url` (`host` when it has no port): what log lines name a node by."""
    return f"{url.host}:{url.explicit_port}" if url.explicit_port else str(url.host)


def _reason(closing: asyncio.Future[Any]) -> str:
    """What ended a connection attempt: the error's type and text (hosts, never passwords)."""
    if closing.cancelled():
        return "cancelled"
    error = closing.exception()
    return f"{type(error).__name__}: {error}" if error else "closed"


def rabbit_broker(url: str, **options: Any) -> RabbitBroker:
    """A `RabbitBroker` (with `options`) on every node of `url`, first to last."""
    nodes = node_urls(url)
    broker = RabbitBroker(nodes[0], **options)
    # FastStream passes these to aio_pika.connect_robust, which builds its connection with
    # `connection_class`; there is no public argument for it.
    broker._connection_kwargs["connection_class"] = functools.partial(
        NodeRotatingConnection, nodes=nodes
    )
    return broker


async def connect_any(url: str) -> AbstractConnection:
    """A plain connection to the first node of `url` that accepts one; the last error when
    none does."""
    nodes = node_urls(url)
    for index, node in enumerate(nodes):
        try:
            return await aio_pika.connect(node)
        except (aio_pika.exceptions.AMQPError, OSError, TimeoutError):
            if index == len(nodes) - 1:
                raise
            log.warning("RabbitMQ node %s unreachable; trying the next", hosts(url)[index])
    raise AssertionError("unreachable: node_urls returns at least one URL")
