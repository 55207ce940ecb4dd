"""Events onto the `orders.events` exchange: the AMQP side of the outbox relay's publisher."""

from __future__ import annotations

from faststream.rabbit import RabbitBroker

from service.domain.records import PendingEvent
from service.topology import Topology


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
