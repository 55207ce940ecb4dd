"""One wrapper around every handler: decode, run, reply or dead-letter, then ack.

This is the one place where errors become the contract's replies. Transient failures
(MongoDB unreachable) are retried with backoff, never turned into a rejection, until
`transient_retry_seconds` have passed; then the message is dead-lettered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from faststream.rabbit import RabbitBroker
from faststream.rabbit.message import RabbitMessage
from pymongo.errors import AutoReconnect, ConnectionFailure, PyMongoError

from service.budget import ByteBudget
from service.config import Settings
from service.domain import events
from service.domain.errors import OrderError
from service.handlers.ordering import Abandoned, Draining, OrderedRunner, Turn
from service.logs import log_context
from service.metrics import ServiceMetrics
from service.placing import Delivery
from service.store.outbox import PendingEvent
from service.topology import COMMANDS, Topology, original_routing_key, retry_routing_key
from service.usecases import utc_now
from service.wire import decode_object, encode, payload_for_rejection

log = logging.getLogger(__name__)

T = TypeVar("T")

Work = Callable[[dict[str, Any], Delivery], Awaitable[dict[str, Any]]]
"""A use case bound to its parsing: body and delivery in, the reply's envelope out."""

INTERNAL = "Internal error; the message was kept for inspection"


ATTEMPT_HEADER = "x-attempt"
"""How many times the handler has already failed on this message."""
ATTEMPTS_HEADER = "x-attempts"
"""On a dead letter: how many times the message was tried."""


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _channel_of(raw: Any) -> Any:
    """The AMQP channel a delivery came on (aio-pika raises once it is closed)."""
    try:
        return raw.channel
    except Exception:  # a closed channel
        return _CLOSED


class _ClosedChannel:
    is_closed = True


_CLOSED = _ClosedChannel()


class TransientExhausted(Exception):
    """MongoDB stayed unreachable for longer than the retry budget."""


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, AutoReconnect | ConnectionFailure):
        return True
    return isinstance(exc, PyMongoError) and exc.has_error_label("RetryableWriteError")


def error_reply(error: OrderError) -> dict[str, Any]:
    return {
        "success": False,
        "message": error.message,
        "error": {"code": error.code, "details": error.details},
    }


class Courier:
    """Carries each message through its use case and delivers the outcome."""

    def __init__(
        self,
        broker: RabbitBroker,
        settings: Settings,
        topology: Topology,
        metrics: ServiceMetrics,
    ) -> None:
        self._broker = broker
        self._settings = settings
        self._topology = topology
        self._metrics = metrics
        self.ordering = OrderedRunner()
        self.budget = ByteBudget(settings.max_in_flight_bytes)
        self._ordered_in_flight = 0
        self._ordered_idle = asyncio.Event()
        self._ordered_idle.set()

    async def serve(
        self,
        message: RabbitMessage,
        work: Work,
        *,
        allow_empty: bool = False,
        ordered: bool = False,
    ) -> None:
        """Run one delivery through `work`; `ordered` keeps per-order delivery order."""
        raw = message.raw_message
        routing_key = original_routing_key(raw.routing_key or "")
        with log_context(
            correlation_id=message.correlation_id or None,
            message_id=raw.message_id,
            routing_key=routing_key,
        ):
            if not ordered:
                async with self.budget.hold(len(message.body)):
                    await self._serve(message, work, routing_key, allow_empty=allow_empty)
                return
            try:
                await self.ordering.gate.admit(_channel_of(raw), raw.delivery_tag or 0)
            except (Draining, Abandoned):
                return  # left unacked: requeued in its place when the channel closes
            self._ordered_in_flight += 1
            self._ordered_idle.clear()
            turn = self.ordering.turn()
            try:
                # asked for in admission order: first come first served, so no deadlock
                async with self.budget.hold(len(message.body)):
                    await self._serve(
                        message, work, routing_key, allow_empty=allow_empty, turn=turn
                    )
            except Exception:
                with contextlib.suppress(Exception):
                    await message.nack(requeue=True)
                raise
            finally:
                turn.release()
                self._ordered_in_flight -= 1
                if not self._ordered_in_flight:
                    self._ordered_idle.set()

    async def drain_ordered(self, grace: float) -> None:
        """Shutting down: admit no more ordered deliveries and let the admitted ones finish,
        so that closing the channel hands the rest, in order, to the next active consumer."""
        self.ordering.gate.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ordered_idle.wait(), grace)

    async def _serve(
        self,
        message: RabbitMessage,
        work: Work,
        routing_key: str,
        *,
        allow_empty: bool,
        turn: Turn | None = None,
    ) -> None:
        raw = message.raw_message
        # Without a message id, a per-delivery one still makes retries inside this worker safe.
        delivery = Delivery(
            raw.message_id or f"delivery:{uuid.uuid4()}",
            message.correlation_id or None,
            reply=bool(message.reply_to),
        )
        refusal: OrderError | None = None
        attempts = 1
        try:
            body = decode_object(
                message.body, limit=self._settings.max_message_bytes, allow_empty=allow_empty
            )
            if turn is not None:
                reply = await self.ordering.run(
                    turn, body, lambda: self._with_retries(work, body, delivery)
                )
            else:
                reply = await self._with_retries(work, body, delivery)
        except OrderError as exc:
            refusal, reply = exc, error_reply(exc)
            log.info("refused %s: %s %s", routing_key, exc.code, exc.message)
        except TransientExhausted:
            refusal = OrderError("Storage unavailable; the message was kept for a retry")
            reply = error_reply(refusal)
        except Exception as exc:
            attempts = _int((raw.headers or {}).get(ATTEMPT_HEADER)) + 1
            log.exception(
                "handler failed on %s (attempt %d, correlation_id=%s)",
                routing_key,
                attempts,
                message.correlation_id,
            )
            if attempts <= len(self._topology.retry_delays):
                await self._retry_later(message, routing_key, attempts, exc)
                await message.ack()
                return
            refusal = OrderError(INTERNAL)
            reply = error_reply(refusal)
        if refusal is not None:
            self._metrics.refused(routing_key, refusal.code)
        if message.reply_to:
            await self._reply(message, reply)
        if refusal is not None and (not message.reply_to or refusal.code == "internal_error"):
            await self._dead_letter(message, routing_key, refusal, attempts)
        await message.ack()

    async def _retry_later(
        self, message: RabbitMessage, routing_key: str, attempt: int, exc: Exception
    ) -> None:
        """Send a message whose handler failed unexpectedly round the delay queue of its
        attempt; it comes back to its own queue when the delay has passed."""
        raw = message.raw_message
        await self._broker.publish(
            message.body,
            exchange=self._topology.retry,
            routing_key=retry_routing_key(
                attempt, self._topology.retry_delays[attempt - 1], routing_key
            ),
            headers={
                **(raw.headers or {}),
                ATTEMPT_HEADER: attempt,
                "x-last-error": type(exc).__name__,
            },
            content_type=raw.content_type,
            correlation_id=raw.correlation_id,
            message_id=raw.message_id,
            reply_to=raw.reply_to,
            persist=True,
            mandatory=False,
        )

    async def _with_retries(
        self, work: Work, body: dict[str, Any], delivery: Delivery
    ) -> dict[str, Any]:
        return await with_retries(
            lambda: work(body, delivery), self._settings.transient_retry_seconds
        )

    async def _reply(self, message: RabbitMessage, reply: dict[str, Any]) -> None:
        await self._broker.publish(
            encode(reply),
            routing_key=message.reply_to,
            correlation_id=message.correlation_id,
            content_type="application/json",
            mandatory=False,
        )

    async def _dead_letter(
        self, message: RabbitMessage, routing_key: str, error: OrderError, attempts: int
    ) -> None:
        """Keep the refused message on the dead-letter exchange; announce refused commands."""
        if routing_key in COMMANDS:
            event = events.command_rejected(
                routing_key,
                code=error.code,
                message=error.message,
                details=error.details,
                payload=payload_for_rejection(message.body),
                now=utc_now(),
            )
            await self.publish_event(
                PendingEvent(
                    event.event_id,
                    event.routing_key,
                    encode(event.body),
                    message.correlation_id or None,
                )
            )
        raw = message.raw_message
        await self._broker.publish(
            message.body,
            exchange=self._topology.dead_letters,
            routing_key=routing_key,
            headers={
                **(raw.headers or {}),
                "x-error-code": error.code,
                "x-error-message": error.message[:1000],
                ATTEMPTS_HEADER: attempts,
            },
            content_type=raw.content_type,
            correlation_id=raw.correlation_id,
            message_id=raw.message_id,
            persist=True,
            mandatory=False,
        )
        self._metrics.dead_letter(routing_key, error.code)

    async def publish_event(self, event: PendingEvent) -> None:
        await publish_event(self._broker, self._topology, event)


async def with_retries(work: Callable[[], Awaitable[T]], budget_seconds: float) -> T:
    """Run `work`, waiting out MongoDB outages with backoff for up to `budget_seconds`."""
    deadline = time.monotonic() + budget_seconds
    pause = 0.1
    while True:
        try:
            return await work()
        except PyMongoError as exc:
            if not is_transient(exc):
                raise
            if time.monotonic() + pause > deadline:
                raise TransientExhausted from exc
            log.warning("storage unavailable (%s); retrying in %.1fs", type(exc).__name__, pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 5.0)


async def publish_event(broker: RabbitBroker, topology: Topology, event: PendingEvent) -> None:
    """Publish persistently with a publisher confirm; `message_id` is the event id."""
    await broker.publish(
        event.payload,
        exchange=topology.events,
        routing_key=event.routing_key,
        message_id=event.event_id,
        correlation_id=short_string(event.correlation_id),
        content_type="application/json",
        persist=True,
        mandatory=False,
    )


SHORT_STRING_BYTES = 255


def short_string(value: str | None) -> str | None:
    """`value` cut to what an AMQP short string holds (255 bytes of UTF-8, whole
    characters), so no stored correlation id can keep an event from being published."""
    if value is None or len(value.encode()) <= SHORT_STRING_BYTES:
        return value
    return value.encode()[:SHORT_STRING_BYTES].decode("utf-8", errors="ignore")
