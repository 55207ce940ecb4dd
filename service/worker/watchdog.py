"""Consumers that vanish after a reconnect are noticed and started again.

FastStream has an open report (ag2ai/faststream#2758) of RabbitMQ consumers missing after the
connection was recovered: the queues exist, nothing consumes them, and the worker looks
alive. The watchdog checks every subscriber's consumer against the channel it should be
registered on and, when one is missing while the connection is up, restarts that subscriber;
so too the consumers the service runs itself (`orders.place` and the action intake:
`OwnConsumer`).
`missing()` is also what a readiness check asks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from faststream.rabbit import RabbitBroker

log = logging.getLogger(__name__)


async def consumer_attached(subscriber: Any) -> bool:
    """Whether the subscriber's consumer is registered on an open channel.

    Reads FastStream's and aio-pika's state (`_queue_obj`, `_consumer_tag`, the channel's
    consumers); anything unexpected counts as not attached.
    """
    queue = getattr(subscriber, "_queue_obj", None)
    tag = getattr(subscriber, "_consumer_tag", None)
    if queue is None or tag is None:
        return False
    try:
        channel = await queue.channel.get_underlay_channel()  # the aiormq channel
    except Exception:  # a closed or recovering channel raises here
        return False
    return not channel.is_closed and tag in channel.consumers


class OwnConsumer(Protocol):
    """A consumer of one queue that FastStream does not run."""

    @property
    def queue(self) -> str: ...

    async def attached(self) -> bool: ...

    async def restart(self) -> None: ...


class ConsumerWatchdog:
    def __init__(
        self, broker: RabbitBroker, own: Sequence[OwnConsumer] = (), *, interval: float = 5.0
    ) -> None:
        self._broker = broker
        self._own = own
        self._interval = interval

    async def missing(self) -> list[str]:
        """Queue names whose consumer is not attached right now."""
        subscribers = [
            sub.queue.name  # type: ignore[attr-defined]
            for sub in self._broker.subscribers
            if not await consumer_attached(sub)
        ]
        return subscribers + [c.queue for c in self._own if not await c.attached()]

    def _connected(self) -> bool:
        connection = getattr(self._broker, "_connection", None)
        return connection is not None and not connection.is_closed

    async def check(self) -> list[str]:
        """Restart the subscribers whose consumers are gone; return their queue names."""
        if not self._connected():
            return []  # the robust connection is reconnecting: its recovery goes first
        restarted = []
        for subscriber in self._broker.subscribers:
            if await consumer_attached(subscriber):
                continue
            name = subscriber.queue.name  # type: ignore[attr-defined]
            log.error("consumer of %s is gone; starting it again", name)
            await subscriber.stop()
            await subscriber.start()
            restarted.append(name)
        for consumer in self._own:
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
