"""Consumers that vanish after a reconnect are noticed and started again.

FastStream has an open report (ag2ai/faststream#2758) of RabbitMQ consumers missing after the
connection was recovered: the queues exist, nothing consumes them, and the worker looks
alive. The worker consumes every queue itself (service/worker/consumers.py) on aio-pika's
robust channels, which restore their consumers the same way; the watchdog checks each
consumer against the channel it should be registered on and, when one is missing while the
connection is up, starts it again. `missing()` is also what a readiness check asks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from aio_pika.abc import AbstractRobustConnection

log = logging.getLogger(__name__)


class OwnConsumer(Protocol):
    """A consumer of one queue (`QueueConsumer`)."""

    @property
    def queue(self) -> str: ...

    async def attached(self) -> bool: ...

    async def restart(self) -> None: ...


class ConsumerWatchdog:
    def __init__(
        self,
        connection: Callable[[], AbstractRobustConnection | None],
        consumers: Sequence[OwnConsumer],
        *,
        interval: float = 5.0,
    ) -> None:
        self._connection = connection
        self._consumers = consumers
        self._interval = interval

    async def missing(self) -> list[str]:
        """Queue names whose consumer is not attached right now."""
        return [c.queue for c in self._consumers if not await c.attached()]

    def _connected(self) -> bool:
        connection = self._connection()
        return connection is not None and not connection.is_closed

    async def check(self) -> list[str]:
        """Start again the consumers that are gone; return their queue names."""
        if not self._connected():
            return []  # the robust connection is reconnecting: its recovery goes first
        restarted = []
        for consumer in self._consumers:
            if not await consumer.attached():
                log.error("consumer of %s is gone; starting it again", consumer.queue)
                await consumer.restart()
                restarted.append(consumer.queue)
        return restarted

    async def run(self) -> None:
        """Check periodically; a consumer must be missing on two checks in a row, so that
        a recovery in progress is not interrupted."""
        suspects: set[str] = set()
        while True:
            await asyncio.sleep(self._interval)
            missing = set(await self.missing()) if self._connected() else set()
            if missing & suspects:
                try:
                    await self.check()
                except Exception:
                    log.exception("restarting consumers failed; trying again")
            suspects = missing
