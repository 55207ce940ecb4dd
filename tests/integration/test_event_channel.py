"""The worker's events, published past FastStream (service/worker/publishing.py), against
the real RabbitMQ: the message the broker's publish made (persistent, the event id as
`message_id`, JSON), confirmed, and counted in the middleware's `published_*` series; a
refusal raises and counts as an error."""

from __future__ import annotations

import aio_pika
import pytest
from aio_pika import DeliveryMode, ExchangeType
from aio_pika.abc import AbstractRobustConnection
from prometheus_client import CollectorRegistry

from service.domain.records import PendingEvent
from service.metrics import PublishMetrics
from service.worker.publishing import EventChannel

EXCHANGE = "events.channel"  # the test vhost goes at the end of the session
EVENT = PendingEvent("event-1", "order.placed", b'{"event_id": "event-1"}', "c" * 300)


def _sample(registry: CollectorRegistry, name: str, destination: str, **labels: str) -> float:
    every = {"app_name": "orders", "broker": "rabbitmq", "destination": destination, **labels}
    return registry.get_sample_value(name, every) or 0.0


async def test_an_event_goes_out_persistent_confirmed_and_counted(
    connection: AbstractRobustConnection,
) -> None:
    channel = await connection.channel()
    exchange = await channel.declare_exchange(EXCHANGE, ExchangeType.TOPIC, durable=True)
    queue = await channel.declare_queue("", exclusive=True)
    await queue.bind(exchange, "order.#")
    registry = CollectorRegistry()

    await EventChannel(lambda: connection, EXCHANGE, PublishMetrics(registry)).publish(EVENT)

    message = await queue.get(timeout=5)
    assert message.body == EVENT.payload
    assert message.routing_key == "order.placed"
    assert message.message_id == "event-1"
    assert message.delivery_mode == DeliveryMode.PERSISTENT
    assert message.content_type == "application/json"
    assert message.correlation_id == "c" * 255  # cut to an AMQP short string
    destination = f"{EXCHANGE}.order.placed"
    total = "orders_published_messages_total"
    assert _sample(registry, total, destination, status="success") == 1
    assert _sample(registry, total, destination, status="error") == 0
    duration = "orders_published_messages_duration_seconds_count"
    assert _sample(registry, duration, destination) == 1
    await channel.close()


async def test_a_refused_event_raises_and_counts_as_an_error(
    connection: AbstractRobustConnection,
) -> None:
    registry = CollectorRegistry()
    events = EventChannel(lambda: connection, "events.channel.missing", PublishMetrics(registry))
    with pytest.raises(aio_pika.exceptions.AMQPError):
        await events.publish(EVENT)  # no such exchange: the broker closes the channel
    destination = "events.channel.missing.order.placed"
    total = "orders_published_messages_total"
    assert _sample(registry, total, destination, status="error") == 1
    assert _sample(registry, total, destination, status="success") == 0
    exceptions = "orders_published_messages_exceptions_total"
    assert (
        sum(
            sample.value
            for metric in registry.collect()
            for sample in metric.samples
            if sample.name == exceptions and sample.labels["destination"] == destination
        )
        == 1
    )
