"""Events onto the `orders.events` exchange: the AMQP side of the outbox relay's publisher."""

from __future__ import annotations

from typing import TypedDict

from faststream.rabbit import RabbitBroker

from service.domain.records import PendingEvent
from service.topology import Topology


class EventProperties(TypedDict):
    message_id: str
    correlation_id: str | None
    content_type: str


def event_properties(event: PendingEvent) -> EventProperties:
    """The AMQP properties of an event's message, wherever it is published from (the
    gateway here, the worker in service/worker/publishing.py); both publish it persistent."""
    return {
        "message_id": event.event_id,
        "correlation_id": short_string(event.correlation_id),
        "content_type": "application/json",
    }


async def publish_event(broker: RabbitBroker, topology: Topology, event: PendingEvent) -> None:
    """Publish persistently with a publisher confirm; `message_id` is the event id."""
    await broker.publish(
        event.payload,
        exchange=topology.events,
        routing_key=event.routing_key,
        persist=True,
        mandatory=False,
        **event_properties(event),
    )


SHORT_STRING_BYTES = 255


def short_string(value: str | None) -> str | None:
    """`value` cut to what an AMQP short string holds (255 bytes of UTF-8, whole
    characters), so no stored correlation id can keep an event from being published."""
    if value is None or len(value.encode()) <= SHORT_STRING_BYTES:
        return value
    return value.encode()[:SHORT_STRING_BYTES].decode("utf-8", errors="ignore")
