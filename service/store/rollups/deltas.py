"""What each change adds to the rollups: the deltas the change's write sets in the order's
`rollup` field (`{v: version, d: [deltas]}`, the version so that every write changes it),
where the rollups' change feed reads them. A bucket delta counts an order (`n`) and its
total (`t`) under its UTC day, status and currency, and names the order's customer
(`order_customer`: bucket deltas count in their customer's breakdown too); a customer delta
counts a customer's orders (`n`) and kept revenue (`kept`) in a currency."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from orders_vocabulary.money import ZERO
from orders_vocabulary.statuses import OrderStatus
from service.domain.model import Order
from service.domain.order import Change
from service.domain.statuses import NO_REVENUE
from service.store.client import Document

ROLLUP = "rollup"
ORDER_CUSTOMER = "order_customer"
ROLLUPS_FEED = "rollups"
"""The change feed that adds the deltas to the rollups (`service.store.feed`)."""
FEED_PIPELINE: tuple[Document, ...] = (
    {"$match": {"operationType": {"$in": ["insert", "update", "replace"]}}},
    {
        "$project": {
            "clusterTime": 1,
            f"fullDocument.{ROLLUP}": 1,
            f"updateDescription.updatedFields.{ROLLUP}": 1,
        }
    },
)
"""The rollups feed reads only the deltas of each write (and when it was written)."""


def keeps_revenue(status: OrderStatus) -> bool:
    """Whether an order in `status` counts in the revenue."""
    return status not in NO_REVENUE


def rollup_field(version: int, deltas: list[Document]) -> Document:
    """The `rollup` field a write of the order at `version` sets."""
    return {"v": version, "d": deltas}


def deltas_of(changes: Sequence[Document]) -> list[Document]:
    """The deltas of the writes that `changes` (the rollups feed's) are."""
    deltas: list[Document] = []
    for change in changes:
        fields = change.get("fullDocument") or change.get("updateDescription", {}).get(
            "updatedFields", {}
        )
        rollup = fields.get(ROLLUP)
        if rollup is not None:
            deltas.extend(rollup["d"])
    return deltas


def _bucket(order: Order, status: OrderStatus, sign: int) -> Document:
    return {
        ORDER_CUSTOMER: order.customer_id,
        "day": order.created_at.strftime("%Y-%m-%d"),
        "status": str(status),
        "currency": order.currency,
        "n": sign,
        "t": order.total * sign,
    }


def _customer(order: Order, orders: int, kept: Decimal) -> Document:
    return {
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
