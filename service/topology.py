"""Exchanges, queues and routing keys, named by the settings.

orders (topic) --orders.place--> queue orders.place --> worker
                                  ^  x-dead-letter-exchange: orders.dlx
a handler fault: worker --r1.orders.place--> orders.retry (topic)
    --> queue orders.retry.1.<ms>ms (TTL) --expired--> orders.requeue (topic)
    --*.orders.place--> queue orders.place again, up to len(retry_delays) times
then: worker --orders.place--> orders.dlx --#--> orders.dead
(an action is retried in place instead, in its order's turn: service/worker/delivery.py;
the attempt count comes from this round, never from a header: service/worker/retries.py)

Actions are spread over the workers by order (service/worker/partitions.py):
orders --orders.action--> queue orders.action (single active consumer: one worker routes)
    --> orders.action.partitions (direct) --<n>--> queue orders.action.<n>, n < partitions
    (each single active consumer; the partitions are shared out among the workers)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from faststream.rabbit import ExchangeType, RabbitExchange, RabbitQueue

from service.config import Settings

if TYPE_CHECKING:
    from faststream.rabbit.schemas.queue import ClassicQueueArgs

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


def _topic(name: str) -> RabbitExchange:
    return RabbitExchange(name, type=ExchangeType.TOPIC, durable=True)


@dataclass(frozen=True)
class Topology:
    commands: RabbitExchange
    events: RabbitExchange
    dead_letters: RabbitExchange
    dead_letter_queue: RabbitQueue
    retry: RabbitExchange
    requeue: RabbitExchange
    retry_delays: tuple[int, ...]
    """Milliseconds a failed message waits before attempt 2, 3, ..."""
    partition_exchange: RabbitExchange
    """Where the routing worker sends each action, with its partition's number as key."""
    partitions: int
    """How many partition queues share out the actions (the same on every worker)."""

    def queue(self, routing_key: str) -> RabbitQueue:
        """The durable queue for one routing key; refused messages go to the dead letters.

        The action queue has a single active consumer: with several workers, one of them
        takes every action, so actions on one order are applied in the order published.
        """
        arguments: ClassicQueueArgs = {"x-dead-letter-exchange": self.dead_letters.name}
        if routing_key == ACTION:
            arguments["x-single-active-consumer"] = True
        return RabbitQueue(
            routing_key,
            durable=True,
            routing_key=routing_key,
            arguments=arguments,
        )

    def partition_queue(self, partition: int) -> RabbitQueue:
        """`orders.action.<n>`: the actions of the orders that hash to partition n, applied
        by one worker at a time (single active consumer); dead letters keep the key
        `orders.action`."""
        arguments: ClassicQueueArgs = {
            "x-dead-letter-exchange": self.dead_letters.name,
            "x-dead-letter-routing-key": ACTION,
            "x-single-active-consumer": True,
        }
        return RabbitQueue(
            f"{ACTION}.{partition}", durable=True, routing_key=str(partition), arguments=arguments
        )

    def delay_queues(self) -> list[RabbitQueue]:
        return [
            RabbitQueue(
                f"{self.retry.name}.{attempt}.{delay}ms",
                durable=True,
                routing_key=f"{retry_routing_key(attempt, delay, '')}#",
                arguments={
                    "x-message-ttl": delay,
                    "x-dead-letter-exchange": self.requeue.name,
                },
            )
            for attempt, delay in enumerate(self.retry_delays, start=1)
        ]


def topology(settings: Settings) -> Topology:
    return Topology(
        commands=_topic(settings.exchange),
        events=_topic(settings.events_exchange),
        dead_letters=_topic(settings.dead_letter_exchange),
        dead_letter_queue=RabbitQueue(settings.dead_letter_queue, durable=True, routing_key="#"),
        retry=_topic(f"{settings.exchange}.retry"),
        requeue=_topic(f"{settings.exchange}.requeue"),
        retry_delays=tuple(settings.retry_delays_ms),
        partition_exchange=RabbitExchange(
            f"{settings.exchange}.action.partitions", type=ExchangeType.DIRECT, durable=True
        ),
        partitions=settings.action_partitions,
    )
