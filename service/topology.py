"""Exchanges, queues and routing keys, named by the settings."""

from __future__ import annotations

from dataclasses import dataclass

from faststream.rabbit import ExchangeType, RabbitExchange, RabbitQueue

from service.config import Settings

PLACE = "orders.place"
ACTION = "orders.action"
GET = "orders.get"
LIST = "orders.list"
STATS = "orders.stats"
STATUSES = "orders.statuses"

COMMANDS = (PLACE, ACTION)
QUERIES = (GET, LIST, STATS, STATUSES)


@dataclass(frozen=True)
class Topology:
    commands: RabbitExchange
    events: RabbitExchange
    dead_letters: RabbitExchange
    dead_letter_queue: RabbitQueue

    def queue(self, routing_key: str) -> RabbitQueue:
        """The durable queue for one routing key; refused messages go to the dead letters."""
        return RabbitQueue(
            routing_key,
            durable=True,
            routing_key=routing_key,
            arguments={"x-dead-letter-exchange": self.dead_letters.name},
        )


def topology(settings: Settings) -> Topology:
    return Topology(
        commands=RabbitExchange(settings.exchange, type=ExchangeType.TOPIC, durable=True),
        events=RabbitExchange(settings.events_exchange, type=ExchangeType.TOPIC, durable=True),
        dead_letters=RabbitExchange(
            settings.dead_letter_exchange, type=ExchangeType.TOPIC, durable=True
        ),
        dead_letter_queue=RabbitQueue(settings.dead_letter_queue, durable=True, routing_key="#"),
    )
