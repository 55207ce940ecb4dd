"""What the worker does with each queue's deliveries: hands them to the courier with the
application's parse -> use case -> envelope step (service/application/handlers.py); an
action to the action router first (service/worker/partitions.py).

The worker consumes every queue itself, as plain aio-pika consumers
(service/worker/consumers.py); `catalogue_router` declares their subscribers for the
AsyncAPI document only."""

from __future__ import annotations

import contextlib

from aio_pika.abc import AbstractIncomingMessage
from faststream.middlewares import AckPolicy
from faststream.rabbit import Channel, RabbitRouter
from faststream.rabbit.annotations import RabbitMessage
from faststream.rabbit.message import RabbitMessage as Delivered
from faststream.rabbit.subscriber.usecase import RabbitSubscriber

from service.application.handlers import OrderHandlers
from service.topology import ACTION, GET, LIST, PLACE, STATS, STATUSES, Topology
from service.worker.asyncapi_docs import (
    GetOrderBody,
    ListOrdersBody,
    ListStatusesBody,
    OrderActionBody,
    OrderStatsBody,
    PlaceOrderBody,
    document_outputs,
)
from service.worker.consumers import Handle, delivered
from service.worker.delivery import Courier, Work


async def keep_bytes(message: Delivered) -> bytes:
    """Decoder: the body stays raw bytes; `Courier` parses it and owns every error.

    The subscribers' `body` is these bytes; its annotation (`PlaceOrderBody`, ...) only
    names the model the AsyncAPI document shows (service/worker/asyncapi_docs.py)."""
    return message.body


def serving(courier: Courier, work: Work, *, allow_empty: bool = False) -> Handle:
    """What becomes of a delivery from a queue the worker consumes itself with `work`: the
    courier serves it (replies, dead-letters, retries and acks it); one it could not settle
    is nacked and requeued, as FastStream's NACK_ON_ERROR did for the subscribers."""

    async def serve(raw: AbstractIncomingMessage) -> None:
        message = delivered(raw)
        try:
            await courier.serve(message, work, allow_empty=allow_empty)
        except Exception:
            with contextlib.suppress(Exception):  # its channel closed: redelivered anyway
                await message.nack(requeue=True)
            raise

    return serve


def served(handlers: OrderHandlers, courier: Courier) -> dict[str, Handle]:
    """The handle of each routing key whose queue the worker consumes with the courier
    alone: every one but `orders.action`, whose intake routes each action to its partition
    (service/worker/partitions.py)."""
    return {
        PLACE: serving(courier, handlers.place),
        GET: serving(courier, handlers.get),
        LIST: serving(courier, handlers.list),
        STATS: serving(courier, handlers.stats),
        STATUSES: serving(courier, handlers.statuses, allow_empty=True),
    }


def catalogue_router(
    handles: dict[str, Handle], route_action: Handle, topology: Topology, *, prefetch: int
) -> RabbitRouter:
    """Every queue's subscriber as the AsyncAPI document shows it, and the document's
    outputs, on a router that no running broker includes: the worker consumes every queue
    itself (service/worker/consumers.py), each on a channel of its own with this prefetch;
    the action router acks each action once it is forwarded."""
    router = RabbitRouter()

    def subscribe(
        routing_key: str,
        description: str,
        *,
        channel: Channel | None = None,
        ack_policy: AckPolicy = AckPolicy.NACK_ON_ERROR,
    ) -> RabbitSubscriber:
        return router.subscriber(
            topology.queue(routing_key),
            topology.commands,
            channel=channel,
            decoder=keep_bytes,
            ack_policy=ack_policy,
            no_reply=True,
            title=routing_key,
            description=f"Sent to the `{topology.commands.name}` exchange (topic) with this "
            f"routing key. {description}",
        )

    @subscribe(GET, "One order by id or order_id (GetOrder). Reply: the order as data.")
    async def get_order(body: GetOrderBody, message: RabbitMessage) -> None:
        await handles[GET](message.raw_message)

    @subscribe(LIST, "A page of orders (ListOrders). Reply: ListReply.")
    async def list_orders(body: ListOrdersBody, message: RabbitMessage) -> None:
        await handles[LIST](message.raw_message)

    @subscribe(
        STATS, "Counts and revenue over the filtered orders (OrderStats). Reply: StatsReply."
    )
    async def order_stats(body: OrderStatsBody, message: RabbitMessage) -> None:
        await handles[STATS](message.raw_message)

    @subscribe(
        STATUSES, "The eight statuses, in order; the body is {} or empty. Reply: the list as data."
    )
    async def order_statuses(body: ListStatusesBody, message: RabbitMessage) -> None:
        await handles[STATUSES](message.raw_message)

    document_outputs(router, topology)

    @subscribe(
        PLACE,
        "Place an order (PlaceOrder). Placing the same idempotency_key (else the same AMQP "
        "message_id) again with the same body returns the first order; with another body it "
        "is an idempotency_conflict. Reply: the order as data.",
    )
    async def place_order(body: PlaceOrderBody, message: RabbitMessage) -> None:
        await handles[PLACE](message.raw_message)

    @subscribe(
        ACTION,
        "Act on an order (OrderAction: update_status, cancel, complete, update_metadata), "
        "one action at a time per order, in the order published. Reply: the order after it.",
        channel=Channel(prefetch_count=prefetch),
        ack_policy=AckPolicy.MANUAL,  # the router acks; on shutdown, held ones stay unacked
    )
    async def act_on_order(body: OrderActionBody, message: RabbitMessage) -> None:
        await route_action(message.raw_message)

    return router
