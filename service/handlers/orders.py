"""The subscribers: one per routing key, each a parse -> use case -> envelope step."""

from __future__ import annotations

from typing import Any

from faststream.middlewares import AckPolicy
from faststream.rabbit import Channel, RabbitRouter
from faststream.rabbit.annotations import RabbitMessage
from faststream.rabbit.subscriber.usecase import RabbitSubscriber

from orders_vocabulary.statuses import OrderStatus
from schemas.commands import PlaceOrder
from schemas.queries import GetOrder, ListOrders, ListStatuses, OrderStatsQuery
from service.domain.views import order_view
from service.handlers.catalogue import (
    GetOrderBody,
    ListOrdersBody,
    ListStatusesBody,
    OrderActionBody,
    OrderStatsBody,
    PlaceOrderBody,
    document_outputs,
)
from service.handlers.delivery import Courier
from service.handlers.parsing import parse, parse_action
from service.placing import Delivery, Placed
from service.store.queries import Page
from service.topology import ACTION, GET, LIST, PLACE, STATS, STATUSES, Topology
from service.usecases import OrderService


async def keep_bytes(message: RabbitMessage) -> bytes:
    """Decoder: the body stays raw bytes; `Courier` parses it and owns every error.

    The subscribers' `body` is these bytes; its annotation (`PlaceOrderBody`, ...) only
    names the model the AsyncAPI document shows (service/handlers/catalogue.py)."""
    return message.body


class OrderHandlers:
    """The use cases behind each routing key. `service` is set when the app has started."""

    def __init__(self) -> None:
        self.service: OrderService | None = None

    @property
    def _orders(self) -> OrderService:
        if self.service is None:  # pragma: no cover - the lifespan sets it before consuming
            raise RuntimeError("the order service is not started")
        return self.service

    async def place(self, body: dict[str, Any], delivery: Delivery) -> dict[str, Any]:
        placed = await self._orders.place(parse(PlaceOrder, body), delivery)
        return placed_reply(placed, with_data=delivery.reply)

    async def act(self, body: dict[str, Any], delivery: Delivery) -> dict[str, Any]:
        action = parse_action(body)
        order = await self._orders.act(action, delivery)
        return {
            "success": True,
            "message": f"Action {action.action} applied",
            "data": order_view(order) if delivery.reply else None,
        }

    async def get(self, body: dict[str, Any], _: Delivery) -> dict[str, Any]:
        order = await self._orders.get(parse(GetOrder, body))
        return {"success": True, "data": order_view(order)}

    async def list(self, body: dict[str, Any], _: Delivery) -> dict[str, Any]:
        query = parse(ListOrders, body)
        page = await self._orders.list(query)
        return {
            "success": True,
            "data": [order_view(order) for order in page.orders],
            "pagination": _pagination(query, page),
        }

    async def stats(self, body: dict[str, Any], _: Delivery) -> dict[str, Any]:
        return {"success": True, "data": await self._orders.stats(parse(OrderStatsQuery, body))}

    async def statuses(self, body: dict[str, Any], _: Delivery) -> dict[str, Any]:
        parse(ListStatuses, body)
        return {"success": True, "data": [str(status) for status in OrderStatus]}


def placed_reply(placed: Placed, *, with_data: bool) -> dict[str, Any]:
    message = "Order already placed" if placed.replayed else "Order placed successfully"
    data = order_view(placed.order) if with_data else None
    return {"success": True, "message": message, "data": data}


def _pagination(query: ListOrders, page: Page) -> dict[str, Any]:
    """The contract's pagination; in cursor mode (`cursor` given) with `next_cursor` and
    without a page number."""
    pagination: dict[str, Any] = {
        "current_page": query.page,
        "per_page": query.per_page,
        "total": page.total,
        "last_page": page.last_page,
    }
    if query.cursor is not None:
        pagination |= {"current_page": None, "next_cursor": page.next_cursor}
    return pagination


def order_router(
    handlers: OrderHandlers, courier: Courier, topology: Topology, *, prefetch: int
) -> RabbitRouter:
    router = RabbitRouter()

    def subscribe(
        routing_key: str,
        description: str,
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

    @subscribe(
        PLACE,
        "Place an order (PlaceOrder). Placing the same idempotency_key (else the same AMQP "
        "message_id) again with the same body returns the first order; with another body it "
        "is an idempotency_conflict. Reply: the order as data.",
    )
    async def place_order(body: PlaceOrderBody, message: RabbitMessage) -> None:
        await courier.serve(message, handlers.place)

    # A channel of its own: its delivery tags number the actions alone, which is what
    # keeps per-order order (see handlers/ordering.py).
    @subscribe(
        ACTION,
        "Act on an order (OrderAction: update_status, cancel, complete, update_metadata), "
        "one action at a time per order, in the order published. Reply: the order after it.",
        Channel(prefetch_count=prefetch),
        AckPolicy.MANUAL,  # the courier acks; on shutdown, held deliveries stay unacked
    )
    async def act_on_order(body: OrderActionBody, message: RabbitMessage) -> None:
        await courier.serve(message, handlers.act, ordered=True)

    @subscribe(GET, "One order by id or order_id (GetOrder). Reply: the order as data.")
    async def get_order(body: GetOrderBody, message: RabbitMessage) -> None:
        await courier.serve(message, handlers.get)

    @subscribe(LIST, "A page of orders (ListOrders). Reply: ListReply.")
    async def list_orders(body: ListOrdersBody, message: RabbitMessage) -> None:
        await courier.serve(message, handlers.list)

    @subscribe(
        STATS, "Counts and revenue over the filtered orders (OrderStats). Reply: StatsReply."
    )
    async def order_stats(body: OrderStatsBody, message: RabbitMessage) -> None:
        await courier.serve(message, handlers.stats)

    @subscribe(
        STATUSES, "The eight statuses, in order; the body is {} or empty. Reply: the list as data."
    )
    async def order_statuses(body: ListStatusesBody, message: RabbitMessage) -> None:
        await courier.serve(message, handlers.statuses, allow_empty=True)

    document_outputs(router, topology)
    return router
