"""What each change adds to the rollups: the deltas pushed into the order's `rollups_pending`
array in the same write as the change. A delta has a unique `_d`; a bucket delta counts an
order (`n`) and its total (`t`) under its UTC day, status and currency; a customer delta
counts a customer's orders (`n`) and kept revenue (`kept`) in a currency."""

from __future__ import annotations

import uuid
from decimal import Decimal

from orders_vocabulary.money import ZERO
from orders_vocabulary.statuses import OrderStatus
from service.domain.model import Order
from service.domain.order import Change
from service.domain.statuses import NO_REVENUE
from service.store.client import Document

PENDING: Document = {"rollups_pending._d": {"$exists": True}}
"""Orders with deltas not yet in the rollups (served by a partial index)."""
ORDER_CUSTOMER = "order_customer"
UNWOUND: tuple[Document, ...] = (
    {"$unwind": "$rollups_pending"},
    {"$replaceWith": {"$mergeObjects": ["$rollups_pending", {ORDER_CUSTOMER: "$customer_id"}]}},
)
"""Aggregation stages over orders that yield each of their pending deltas as a document,
with the customer of the order it belongs to in `order_customer` (bucket deltas count in
their customer's breakdown too)."""
PENDING_DELTAS: tuple[Document, ...] = ({"$match": PENDING}, *UNWOUND)
"""Aggregation stages over the orders that yield every pending delta as a document."""


def keeps_revenue(status: OrderStatus) -> bool:
    """Whether an order in `status` counts in the revenue."""
    return status not in NO_REVENUE


def _bucket(order: Order, status: OrderStatus, sign: int) -> Document:
    return {
        "_d": uuid.uuid4().hex,
        "day": order.created_at.strftime("%Y-%m-%d"),
        "status": str(status),
        "currency": order.currency,
        "n": sign,
        "t": order.total * sign,
    }


def _customer(order: Order, orders: int, kept: Decimal) -> Document:
    return {
        "_d": uuid.uuid4().hex,
        "customer_id": order.customer_id,
        "currency": order.currency,
        "n": orders,
        "kept": kept,
    }


def place_deltas(order: Order) -> list[Document]:
    kept = order.total if keeps_revenue(order.status) else ZERO
    return [_bucket(order, order.status, 1), _customer(order, 1, kept)]


def change_deltas(change: Change) -> list[Document]:
    before, after = change.before, change.after
    if before.status == after.status:
        return []
    deltas = [_bucket(before, before.status, -1), _bucket(after, after.status, 1)]
    if keeps_revenue(before.status) != keeps_revenue(after.status):
        kept = after.total if keeps_revenue(after.status) else -after.total
        deltas.append(_customer(after, 0, kept))
    return deltas


def breakdown_increments(
    day: str, status: str, currency: str, n: int, t: Decimal
) -> dict[str, int | Decimal]:
    """What bucket deltas summing to `n` orders and `t` in total (for one customer, day,
    status and currency) add to the customer's `customer_counts` document: `s.<status>.
    <currency>` counts orders (`n`) and their total (`t`); `d.<day>` counts orders (`n`) and,
    for a status that keeps its revenue, that revenue per currency (`k.<currency>`)."""
    if not n and not t:
        return {}
    inc: dict[str, int | Decimal] = {
        f"s.{status}.{currency}.n": n,
        f"s.{status}.{currency}.t": t,
        f"d.{day}.n": n,
    }
    if keeps_revenue(OrderStatus(status)):
        inc[f"d.{day}.k.{currency}"] = t
    return inc
