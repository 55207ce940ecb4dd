"""The courier's outcome policy: what each delivery's result becomes.

One wrapper around every queue's handler: decode, run, then reply, dead-letter, send round the
retry delays or retry in place (ordered work), and ack or nack. This is the one place where
errors become the contract's replies. Transient failures (MongoDB unreachable) are retried
with backoff, never turned into a rejection, until `transient_retry_seconds` have passed;
then the message is dead-lettered. When a delivery may start and what it holds meanwhile
(the byte budget, the per-order gate and turns, the in-flight count) is admission's
business (service/worker/admission.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from faststream.rabbit import RabbitBroker
from faststream.rabbit.message import RabbitMessage

from service.adapters.events import event_payload
from service.amqp_decoding import UndecodableProperties, republishable, undecodable
from service.application.clock import utc_now
from service.application.delivery import Delivery
from service.application.errors import error_reply
from service.application.retries import TransientExhausted, with_retries
from service.config import Settings
from service.domain import events
from service.domain.errors import OrderError
from service.domain.records import PendingEvent
from service.failpoints import Failpoints
from service.logs import log_context
from service.metrics import ServiceMetrics
from service.topology import COMMANDS, Topology, original_routing_key, retry_routing_key
from service.wire import decode_object, encode, payload_for_rejection
from service.worker.admission import Admission
from service.worker.publishing import EventChannel, ReplyChannel
from service.worker.replies import ReplyQueues
from service.worker.retries import (
    ATTEMPT_HEADER,
    ATTEMPTS_HEADER,
    ERROR_CODE_HEADER,
    ERROR_MESSAGE_HEADER,
    LAST_ERROR_HEADER,
    RetryPolicy,
    carried_headers,
)
from service.worker.sequencing import Abandoned, Turn

log = logging.getLogger(__name__)

Work = Callable[[dict[str, Any], Delivery], Awaitable[dict[str, Any]]]
"""A use case bound to its parsing: body and delivery in, the reply's envelope out."""
Attempt = Callable[[], Awaitable[dict[str, Any]]]
"""One try at a message's work."""

INTERNAL = "Internal error; the message was kept for inspection"


def channel_of(raw: Any) -> Any:
    """The AMQP channel a delivery came on (aio-pika raises once it is closed)."""
    try:
        return raw.channel
    except Exception:  # a closed channel
        return _CLOSED


class _ClosedChannel:
    is_closed = True


_CLOSED = _ClosedChannel()


class GaveUp(Exception):
    """Ordered work failed unexpectedly on every attempt it was allowed."""

    def __init__(self, attempts: int, error: Exception) -> None:
        super().__init__(f"failed {attempts} times; last: {type(error).__name__}")
        self.attempts = attempts
        self.error = error


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
        self._retries = RetryPolicy(topology.requeue.name, topology.retry_delays)
        self._reply_queues = ReplyQueues(settings.reply_queue_pattern)
        self._failpoints = Failpoints(settings.failpoints)
        self.admission = Admission(settings.max_in_flight_bytes)
        self._events = EventChannel(
            lambda: broker._connection, topology.events.name, metrics.publishing
        )
        self._replies = ReplyChannel(lambda: broker._connection, metrics.publishing)

    async def serve(
        self,
        message: RabbitMessage,
        work: Work,
        *,
        allow_empty: bool = False,
        ordered: bool = False,
        routing_key: str | None = None,
        admitted: Turn | None = None,
    ) -> bool:
        """Run one delivery through `work`; `ordered` keeps per-order delivery order.
        `routing_key` names the message's key where the delivery's own is not it (an action
        from its partition queue). `admitted`: an ordered delivery's turn, when its caller
        admitted it in order itself. False when the delivery was left unacked, to be
        requeued in its place (the worker is handing its channel over)."""
        raw = message.raw_message
        routing_key = routing_key or original_routing_key(raw.routing_key or "")
        with log_context(
            correlation_id=message.correlation_id or None,
            message_id=raw.message_id,
            routing_key=routing_key,
        ):
            if not ordered:
                async with self.admission.hold(len(message.body)):
                    await self._serve(message, work, routing_key, allow_empty=allow_empty)
                return True
            turn = admitted or await self.admission.admit_ordered(
                channel_of(raw), raw.delivery_tag or 0
            )
            if turn is None:
                return False  # left unacked: requeued in its place when the channel closes
            try:
                # asked for in admission order: first come first served, so no deadlock
                async with self.admission.hold(len(message.body)):
                    await self._serve(
                        message, work, routing_key, allow_empty=allow_empty, turn=turn
                    )
            except Abandoned:
                return False  # its channel closed during an in-place retry: the copy counts
            except Exception:
                with contextlib.suppress(Exception):
                    await message.nack(requeue=True)
                raise
            finally:
                self.admission.release(turn)
            return True

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
        reply_to = self._reply_to(message)
        # Without a message id, a per-delivery one still makes retries inside this worker safe.
        delivery = Delivery(
            raw.message_id or f"delivery:{uuid.uuid4()}",
            message.correlation_id or None,
            reply=reply_to is not None,
        )
        made = self._retries.attempts_made(raw.exchange, raw.routing_key)
        refusal: OrderError | None = None
        failure: Exception | None = None
        attempts = made + 1
        try:
            reply = await self._run(
                message, work, delivery, routing_key, made, allow_empty=allow_empty, turn=turn
            )
        except OrderError as exc:
            refusal, reply = exc, error_reply(exc)
            log.info("refused %s: %s %s", routing_key, exc.code, exc.message)
        except TransientExhausted:
            refusal = OrderError("Storage unavailable; the message was kept for a retry")
            reply = error_reply(refusal)
        except Abandoned:
            raise
        except GaveUp as exc:
            attempts, failure = exc.attempts, exc.error
            refusal = OrderError(INTERNAL)
            reply = error_reply(refusal)
        except Exception as exc:
            attempts, failure = made + 1, exc
            self._log_failure(exc, routing_key, attempts, message)
            if attempts < self._retries.max_attempts:
                await self._retry_later(message, routing_key, attempts, exc)
                await message.ack()
                return
            refusal = OrderError(INTERNAL)
            reply = error_reply(refusal)
        if refusal is not None:
            self._metrics.refused(routing_key, refusal.code)
        if reply_to is not None:
            await self._reply(message, reply_to, reply)
        if refusal is not None and (
            reply_to is None
            or refusal.code == "internal_error"
            or isinstance(refusal, UndecodableProperties)
        ):
            await self._dead_letter(message, routing_key, refusal, attempts, failure)
        await message.ack()

    def _check_properties(self, headers: Mapping[str, Any] | None, routing_key: str) -> None:
        """Refuse a message whose properties could not be decoded (service/amqp_decoding.py);
        it goes to the dead letters even when it also gets a reply."""
        found = undecodable(headers)
        if found is not None:
            log.error("undecodable message properties on %s: %s", routing_key, found.describe())
            self._metrics.undecodable(routing_key, found.names)
            raise UndecodableProperties(found)

    def _reply_to(self, message: RabbitMessage) -> str | None:
        """Where the reply goes: the message's `reply_to` when it is a reply queue, else
        nowhere (`_run` then refuses the message)."""
        reply_to = message.reply_to or None
        return reply_to if reply_to is None or self._reply_queues.allows(reply_to) else None

    async def _run(
        self,
        message: RabbitMessage,
        work: Work,
        delivery: Delivery,
        routing_key: str,
        made: int,
        *,
        allow_empty: bool,
        turn: Turn | None,
    ) -> dict[str, Any]:
        """Check the properties and the reply address, decode the body and run the work
        (ordered work in its order's turn, retried in place); raises what the work raised."""
        self._check_properties(message.raw_message.headers, routing_key)
        if message.reply_to and not delivery.reply:
            raise self._reply_queues.refusal(message.reply_to)
        body = decode_object(
            message.body, limit=self._settings.max_message_bytes, allow_empty=allow_empty
        )
        attempt = self._attempt(work, body, delivery, message.body)
        if turn is None:
            return await attempt()
        return await self.admission.in_turn(
            turn, body, lambda: self._retry_in_place(attempt, message, routing_key, made)
        )

    def _attempt(
        self, work: Work, body: dict[str, Any], delivery: Delivery, raw_body: bytes
    ) -> Attempt:
        async def attempt() -> dict[str, Any]:
            self._failpoints.fail_if_marked(raw_body, delivery.message_id or "")
            return await self._with_retries(work, body, delivery)

        return attempt

    async def _retry_in_place(
        self, attempt: Attempt, message: RabbitMessage, routing_key: str, made: int
    ) -> dict[str, Any]:
        """Ordered work (an action) that fails unexpectedly is tried again where it stands,
        after the same delays as the retry round, while it holds its order's turn: the
        order's later actions wait for it, other orders go on. After the last attempt it is
        given up on (`GaveUp`: dead-lettered as internal_error), and the next action runs."""
        number = made + 1
        while True:
            try:
                return await attempt()
            except (OrderError, TransientExhausted):
                raise
            except Exception as exc:
                self._log_failure(exc, routing_key, number, message)
                if number >= self._retries.max_attempts:
                    raise GaveUp(number, exc) from exc
                await asyncio.sleep(self._retries.delay_after(number) / 1000)
                if channel_of(message.raw_message).is_closed:
                    raise Abandoned from exc
                number += 1

    def _log_failure(
        self, exc: Exception, routing_key: str, attempt: int, message: RabbitMessage
    ) -> None:
        log.error(
            "handler failed on %s (attempt %d of %d, correlation_id=%s)",
            routing_key,
            attempt,
            self._retries.max_attempts,
            message.correlation_id,
            exc_info=exc,
        )

    async def _retry_later(
        self, message: RabbitMessage, routing_key: str, attempt: int, exc: Exception
    ) -> None:
        """Send a message whose handler failed unexpectedly round the delay queue of its
        attempt; it comes back to its own queue, through the requeue exchange, when the
        delay has passed (service/worker/retries.py)."""
        raw = message.raw_message
        await self._broker.publish(
            message.body,
            exchange=self._topology.retry,
            routing_key=retry_routing_key(attempt, self._retries.delay_after(attempt), routing_key),
            headers={
                **self._carried_headers(message),
                ATTEMPT_HEADER: attempt,
                LAST_ERROR_HEADER: type(exc).__name__,
            },
            content_type=raw.content_type,
            correlation_id=raw.correlation_id,
            message_id=raw.message_id,
            reply_to=raw.reply_to,
            persist=True,
            mandatory=False,
        )

    def _carried_headers(self, message: RabbitMessage) -> dict[str, Any]:
        raw = message.raw_message
        carried = carried_headers(raw.headers, retry=self._retries.is_retry(raw.exchange))
        return republishable(carried)

    async def _with_retries(
        self, work: Work, body: dict[str, Any], delivery: Delivery
    ) -> dict[str, Any]:
        return await with_retries(
            lambda: work(body, delivery), self._settings.transient_retry_seconds
        )

    async def _reply(self, message: RabbitMessage, reply_to: str, reply: dict[str, Any]) -> None:
        await self._replies.publish(encode(reply), reply_to, message.correlation_id or None)

    async def _dead_letter(
        self,
        message: RabbitMessage,
        routing_key: str,
        error: OrderError,
        attempts: int,
        failure: Exception | None = None,
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
                    event.event_type,
                    event_payload(event),
                    message.correlation_id or None,
                )
            )
        raw = message.raw_message
        await self._broker.publish(
            message.body,
            exchange=self._topology.dead_letters,
            routing_key=routing_key,
            headers={
                **self._carried_headers(message),
                ERROR_CODE_HEADER: error.code,
                ERROR_MESSAGE_HEADER: error.message[:1000],
                ATTEMPTS_HEADER: attempts,
                **({LAST_ERROR_HEADER: type(failure).__name__} if failure is not None else {}),
            },
            content_type=raw.content_type,
            correlation_id=raw.correlation_id,
            message_id=raw.message_id,
            persist=True,
            mandatory=False,
        )
        self._metrics.dead_letter(routing_key, error.code)

    async def publish_event(self, event: PendingEvent) -> None:
        await self._events.publish(event)
