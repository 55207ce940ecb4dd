"""Each request as both entry points serve it: parse the body, run the use case, build the
reply's envelope. Transport-free: the worker's courier and the gateway's routes call these."""

from __future__ import annotations

from typing import Any

from orders_vocabulary.statuses import OrderStatus
from schemas.commands import PlaceOrder
from schemas.queries import GetOrder, ListOrders, ListStatuses, OrderStatsQuery
from service.adapters.views import order_view
from service.application.delivery import Delivery
from service.application.parsing import parse, parse_action
from service.application.placing import Placed
from service.application.usecases import OrderService
from service.domain.records import Page


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
