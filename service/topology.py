"""Exchanges, queues and routing keys, named by the settings.

orders (topic) --orders.place--> queue orders.place --> worker
                                  ^  x-dead-letter-exchange: orders.dlx
a handler fault: worker --r1.orders.place--> orders.retry (topic)
    --> queue orders.retry.1.<ms>ms (TTL) --expired--> orders.requeue (topic)
    --*.orders.place--> queue orders.place again, up to len(retry_delays) times
then: worker --orders.place--> orders.dlx --#--> orders.dead
(an action is retried in place instead, in its order's turn: service/worker/delivery.py;
the attempt count comes from this round, never from a header: service/worker/retries.py)

Every queue is a quorum queue (`quorum_arguments`, the one place its arguments are built):
replicated on a cluster, so no waiting message depends on one broker node.
- Work queues have a delivery limit (`ORDERS_DELIVERY_LIMIT`): a message handed back more
  often than that (a nack with requeue, or the channel or connection it was delivered on
  closing: a crash, a hand-over) is dead-lettered by the broker to orders.dlx with its routing
  key, `x-first-death-reason: delivery_limit`, so no message is redelivered for ever. Their
  dead-lettering is at-least-once (`x-dead-letter-strategy`, which needs `x-overflow:
  reject-publish`): the broker keeps a letter until orders.dead has confirmed it.
- orders.dead has no delivery limit and no dead-letter exchange: a dead letter waits for
  people, and reading it (the client's dead-letters commands) never drops it.
- Delay queues are quorum queues too (message TTL works on quorum queues since RabbitMQ 3.10,
  and every message in one delay queue has the same TTL, so the head always expires first).
  A message in a delay queue is the only copy (the worker acked the delivery once the copy
  was confirmed): in a classic queue it would be lost with the node it lives on, and while
  that node is down the worker's copies would be confirmed and dropped. With at-least-once
  dead-lettering, an expired message leaves its delay queue only when its work queue took it.
- `ORDERS_QUEUE_MAX_LENGTH` (unset: unbounded) bounds each work queue; a publish to a full
  queue is refused (`reject-publish`: a publisher with confirms gets a nack), never dropped.
Queue arguments cannot change on an existing queue: a queue from an older version (a classic
one, or other limits) is moved over by `make migrate-queues` (service/migrate_queues.py).

Every event is also kept in a stream (`stream_queue`), in publish order, for its retention:
orders.events --#--> stream orders.events.history (x-max-age, x-max-length-bytes)
    --> any consumer, from any point (`x-stream-offset`: first, a timestamp, an offset)
A stream is not a work queue: nothing consumes it away, and `make migrate-queues` leaves it as
it is. Its retention arguments apply when it is created; a stream that exists with others is
kept, with a warning (service/bootstrap.py): a policy changes the retention of an existing
stream (a policy's `max-age` and `max-length-bytes` take precedence over the arguments).

Actions are spread over the workers by order (service/worker/partitions.py):
orders --orders.action--> queue orders.action (single active consumer: one worker routes)
    --> orders.action.partitions (direct) --<n>--> queue orders.action.<n>, n < partitions
    (each single active consumer; the partitions are shared out among the workers)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from faststream.rabbit import ExchangeType, QueueType, RabbitExchange, RabbitQueue

from service.config import Settings

if TYPE_CHECKING:
    from faststream.rabbit.schemas.queue import QuorumQueueArgs, StreamQueueArgs

PLACE = "orders.place"
ACTION = "orders.action"
GET = "orders.get"
LIST = "orders.list"
STATS = "orders.stats"
STATUSES = "orders.statuses"

COMMANDS = (PLACE, ACTION)
QUERIES = (GET, LIST, STATS, STATUSES)
ROUTING_KEYS = COMMANDS + QUERIES


def retry_routing_key(attempt: int, delay_ms: int, routing_key: str) -> str:
    """`r2_5000ms.orders.place`: which delay queue, and which work queue it returns to.

    The delay is part of the key, so a delay queue left over from other settings never
    receives a copy."""
    return f"r{attempt}_{delay_ms}ms.{routing_key}"


_RETRY_PREFIX = re.compile(r"r(\d{1,9})_\d{1,9}ms")


def original_routing_key(routing_key: str) -> str:
    """`r2_5000ms.orders.place` -> `orders.place`: where a retried message was first sent."""
    prefix, _, rest = routing_key.partition(".")
    return rest if rest and _RETRY_PREFIX.fullmatch(prefix) else routing_key


def retry_attempt(routing_key: str) -> int | None:
    """`r2_5000ms.orders.place` -> 2: the attempt whose failure sent it round a delay queue
    (None when the key is not a retry key)."""
    prefix, _, rest = routing_key.partition(".")
    match = _RETRY_PREFIX.fullmatch(prefix) if rest else None
    return int(match.group(1)) if match else None


def quorum_arguments(
    *,
    delivery_limit: int | None = None,
    dead_letter_exchange: str | None = None,
    dead_letter_routing_key: str | None = None,
    max_length: int | None = None,
    message_ttl_ms: int | None = None,
    single_active_consumer: bool = False,
) -> QuorumQueueArgs:
    """The arguments of a quorum queue, `x-queue-type` included.

    With a dead-letter exchange, dead-lettering is at-least-once, which RabbitMQ applies only
    with `x-overflow: reject-publish`; a bound (`max_length`) also refuses publishes rather
    than dropping the oldest message."""
    arguments: QuorumQueueArgs = {}
    if delivery_limit is not None:
        arguments["x-delivery-limit"] = delivery_limit
    if dead_letter_exchange is not None:
        arguments["x-dead-letter-exchange"] = dead_letter_exchange
        arguments["x-dead-letter-strategy"] = "at-least-once"
        arguments["x-overflow"] = "reject-publish"
        if dead_letter_routing_key is not None:
            arguments["x-dead-letter-routing-key"] = dead_letter_routing_key
    if max_length is not None:
        arguments["x-max-length"] = max_length
        arguments["x-overflow"] = "reject-publish"
    if message_ttl_ms is not None:
        arguments["x-message-ttl"] = message_ttl_ms
    if single_active_consumer:
        arguments["x-single-active-consumer"] = True
    return arguments


def quorum_queue(
    name: str, *, routing_key: str = "", arguments: QuorumQueueArgs | None = None
) -> RabbitQueue:
    """A durable quorum queue; FastStream adds `x-queue-type: quorum` to `arguments`."""
    return RabbitQueue(
        name,
        queue_type=QueueType.QUORUM,
        durable=True,
        routing_key=routing_key,
        arguments=arguments or {},
    )


STREAM_RETENTION = ("x-max-age", "x-max-length-bytes", "x-stream-max-segment-size-bytes")
"""The arguments of a stream that only bound what it keeps: RabbitMQ refuses to declare an
existing stream with other values, but a policy changes them in place."""


def stream_queue(name: str, *, max_age: str, max_bytes: int, segment_bytes: int) -> RabbitQueue:
    """A durable stream retained by age (`max_age`, RabbitMQ's form: `7D`, `36h`) and by
    size; retention removes whole segments of `segment_bytes`, never the one being written."""
    arguments: StreamQueueArgs = {
        "x-max-age": max_age,
        "x-max-length-bytes": max_bytes,
        "x-stream-max-segment-size-bytes": segment_bytes,
    }
    return RabbitQueue(
        name, queue_type=QueueType.STREAM, durable=True, routing_key="#", arguments=arguments
    )


def is_stream(queue: RabbitQueue) -> bool:
    return (queue.arguments or {}).get("x-queue-type") == QueueType.STREAM.value


@dataclass(frozen=True)
class QueueDeclaration:
    """A queue and the bindings the service gives it: (exchange, routing key) pairs."""

    queue: RabbitQueue
    bindings: tuple[tuple[str, str], ...]


def _topic(name: str) -> RabbitExchange:
    return RabbitExchange(name, type=ExchangeType.TOPIC, durable=True)


@dataclass(frozen=True)
class Topology:
    commands: RabbitExchange
    events: RabbitExchange
    dead_letters: RabbitExchange
    dead_letter_queue: RabbitQueue
    history: RabbitQueue
    """The stream that keeps every event, bound to `events` with `#`."""
    retry: RabbitExchange
    requeue: RabbitExchange
    retry_delays: tuple[int, ...]
    """Milliseconds a failed message waits before attempt 2, 3, ..."""
    partition_exchange: RabbitExchange
    """Where the routing worker sends each action, with its partition's number as key."""
    partitions: int
    """How many partition queues share out the actions (the same on every worker)."""
    delivery_limit: int = 20
    """How often a work queue hands a message out before dead-lettering it."""
    max_length: int | None = None
    """Most messages waiting in one work queue (None: unbounded)."""

    def work_queue(
        self,
        name: str,
        routing_key: str,
        *,
        single_active_consumer: bool = False,
        dead_letter_routing_key: str | None = None,
    ) -> RabbitQueue:
        """A quorum work queue: the delivery limit, the bound and the dead letters."""
        return quorum_queue(
            name,
            routing_key=routing_key,
            arguments=quorum_arguments(
                delivery_limit=self.delivery_limit,
                dead_letter_exchange=self.dead_letters.name,
                dead_letter_routing_key=dead_letter_routing_key,
                max_length=self.max_length,
                single_active_consumer=single_active_consumer,
            ),
        )

    def queue(self, routing_key: str) -> RabbitQueue:
        """The work queue for one routing key; refused messages go to the dead letters.

        The action queue has a single active consumer: with several workers, one of them
        routes every action to its order's partition queue, in the order published.
        """
        return self.work_queue(
            routing_key, routing_key, single_active_consumer=routing_key == ACTION
        )

    def partition_queue(self, partition: int) -> RabbitQueue:
        """`orders.action.<n>`: the actions of the orders that hash to partition n, applied
        by one worker at a time (single active consumer); dead letters keep the key
        `orders.action`."""
        return self.work_queue(
            f"{ACTION}.{partition}",
            str(partition),
            single_active_consumer=True,
            dead_letter_routing_key=ACTION,
        )

    def delay_queues(self) -> list[RabbitQueue]:
        return [
            quorum_queue(
                f"{self.retry.name}.{attempt}.{delay}ms",
                routing_key=f"{retry_routing_key(attempt, delay, '')}#",
                arguments=quorum_arguments(
                    message_ttl_ms=delay, dead_letter_exchange=self.requeue.name
                ),
            )
            for attempt, delay in enumerate(self.retry_delays, start=1)
        ]

    def declarations(self) -> list[QueueDeclaration]:
        """Every queue the service declares, with its bindings: what the worker declares at
        start-up and what `make migrate-queues` moves (the history stream aside)."""
        dead = QueueDeclaration(self.dead_letter_queue, ((self.dead_letters.name, "#"),))
        delays = [
            QueueDeclaration(queue, ((self.retry.name, queue.routing()),))
            for queue in self.delay_queues()
        ]
        work = [
            QueueDeclaration(
                self.queue(key),
                ((self.commands.name, key), (self.requeue.name, f"*.{key}")),
            )
            for key in ROUTING_KEYS
        ]
        partitions = [
            QueueDeclaration(queue, ((self.partition_exchange.name, queue.routing()),))
            for queue in map(self.partition_queue, range(self.partitions))
        ]
        history = QueueDeclaration(self.history, ((self.events.name, "#"),))
        return [dead, *delays, *work, *partitions, history]


def topology(settings: Settings) -> Topology:
    return Topology(
        commands=_topic(settings.exchange),
        events=_topic(settings.events_exchange),
        dead_letters=_topic(settings.dead_letter_exchange),
        dead_letter_queue=quorum_queue(settings.dead_letter_queue, routing_key="#"),
        history=stream_queue(
            settings.history_stream,
            max_age=settings.history_max_age,
            max_bytes=settings.history_max_bytes,
            segment_bytes=settings.history_segment_bytes,
        ),
        retry=_topic(f"{settings.exchange}.retry"),
        requeue=_topic(f"{settings.exchange}.requeue"),
        retry_delays=tuple(settings.retry_delays_ms),
        partition_exchange=RabbitExchange(
            f"{settings.exchange}.action.partitions", type=ExchangeType.DIRECT, durable=True
        ),
        partitions=settings.action_partitions,
        delivery_limit=settings.delivery_limit,
        max_length=settings.queue_max_length,
    )
