"""What the AsyncAPI document (docs/asyncapi.json) shows beyond the subscribers' signatures.

The subscribers take the body as raw bytes and the `Courier` parses it, so their signatures
alone would document every payload as "bytes". `Carries` states the wire model for the
document only; the events and replies, which the `Courier` and the outbox relay publish
with `broker.publish`, are declared here as publishers that nothing publishes through.
None of this changes how a message is parsed, answered or published.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from faststream.rabbit import ExchangeType, QueueType, RabbitExchange, RabbitQueue, RabbitRouter
from pydantic import Field, GetJsonSchemaHandler, TypeAdapter
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from schemas.commands import OrderAction, PlaceOrder
from schemas.events import (
    OrderCommandRejected,
    OrderMetadataUpdated,
    OrderPlaced,
    OrderStatusChanged,
)
from schemas.queries import GetOrder, ListOrders, ListStatuses, OrderStatsQuery
from schemas.replies import ErrorReply, ListReply, Reply, StatsReply
from service.topology import Topology


@dataclass(frozen=True, eq=False)
class Carries:
    """`Annotated[bytes, Carries(Model), Field(title="Model")]`: validated as bytes (no core
    schema of its own), documented as `Model`. The schema is inlined, not a `$ref`, and the
    title names it: FastStream then files the payload under that title."""

    model: Any

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(TypeAdapter(self.model).core_schema)
        return dict(handler.resolve_ref_schema(schema))


PlaceOrderBody = Annotated[bytes, Carries(PlaceOrder), Field(title="PlaceOrder")]
OrderActionBody = Annotated[bytes, Carries(OrderAction), Field(title="OrderAction")]
GetOrderBody = Annotated[bytes, Carries(GetOrder), Field(title="GetOrder")]
ListOrdersBody = Annotated[bytes, Carries(ListOrders), Field(title="ListOrders")]
OrderStatsBody = Annotated[bytes, Carries(OrderStatsQuery), Field(title="OrderStatsQuery")]
ListStatusesBody = Annotated[bytes, Carries(ListStatuses), Field(title="ListStatuses")]

EVENTS: tuple[tuple[str, type[Any], str], ...] = (
    ("order.placed", OrderPlaced, "An order was placed (not on an idempotent replay)."),
    (
        "order.status_changed",
        OrderStatusChanged,
        "An update_status, cancel or complete changed the status.",
    ),
    ("order.metadata_updated", OrderMetadataUpdated, "An update_metadata was applied."),
    (
        "order.command_rejected",
        OrderCommandRejected,
        "A command without reply_to was refused; the original message went to the dead "
        "letters with x-error-code and x-error-message headers.",
    ),
)

EVENT_DELIVERY = (
    "Published persistent with a publisher confirm, message_id = event_id, and the "
    "command's correlation_id when it had one; at least once, in version order per order: "
    "de-duplicate on event_id."
)

REPLY_TO = "<reply_to>"
"""The address replies are documented under: the request's `reply_to` (not `{reply_to}`,
which AsyncAPI reads as a channel parameter)."""

AnyReply = Annotated[Reply | ListReply | StatsReply | ErrorReply, Field(title="AnyReply")]
AnyEvent = Annotated[
    OrderPlaced | OrderStatusChanged | OrderMetadataUpdated | OrderCommandRejected,
    Field(title="AnyEvent", discriminator="event_type"),
]

HISTORY = (
    "The event history: every event published on the events exchange, kept in publish order "
    "in a RabbitMQ stream (x-queue-type: stream, bound with #) for the retention "
    "(ORDERS_HISTORY_MAX_AGE, default 7D; ORDERS_HISTORY_MAX_BYTES). Read it from any point "
    "with any AMQP 0.9.1 client: basic.qos (a prefetch) and manual acks, and the consumer "
    "argument x-stream-offset = first, last, next, an offset or a timestamp; each delivery "
    "carries its offset in the header x-stream-offset and the event's routing key. Reading "
    "removes nothing; the reader keeps receiving events as they are published. At least "
    "once, like the live events: de-duplicate on event_id."
)


def document_outputs(router: RabbitRouter, topology: Topology) -> None:
    """Declare the events and the replies for the AsyncAPI document."""
    # Passive, as `broker.publish` declares it: `Worker._declare` has created it.
    events = RabbitExchange(
        topology.events.name, type=ExchangeType.TOPIC, durable=True, declare=False
    )
    for routing_key, model, description in EVENTS:
        router.publisher(
            exchange=events,
            routing_key=routing_key,
            title=routing_key,
            description=f"{description} {EVENT_DELIVERY}",
            schema=model,
        )
    # The stream, passive: the worker declares it with its retention (service/bootstrap.py).
    history = RabbitQueue(topology.history.name, queue_type=QueueType.STREAM, declare=False)
    router.publisher(
        history,
        exchange=events,
        routing_key="#",  # its binding: every event, whatever its routing key
        title=topology.history.name,
        description=HISTORY,
        schema=AnyEvent,
    )
    router.publisher(
        REPLY_TO,
        title="reply",
        description="The one reply to a request that carries reply_to: published to the "
        "default exchange with routing key = reply_to and the request's correlation_id. "
        "ListReply answers orders.list, StatsReply orders.stats, ErrorReply any refused "
        "request, Reply the rest. reply_to must be a server-named queue (amq.gen-...), direct "
        "reply-to (amq.rabbitmq.reply-to) or a queue matching ORDERS_REPLY_QUEUE_PATTERN; any "
        "other gets no reply and the request is dead-lettered as bad_request.",
        schema=AnyReply,
    )
