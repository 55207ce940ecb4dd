"""What the commands print: the consoles, JSON, and orders, lists of orders and events as
people read them (tables and lines)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from orders_client.client import OrderEvent
from schemas import (
    OrderCommandRejected,
    OrderMetadataUpdated,
    OrderPlaced,
    OrderStatusChanged,
    OrderView,
)

out = Console(soft_wrap=False)
err = Console(stderr=True)


def echo_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def dump(model: BaseModel) -> Any:
    return model.model_dump(mode="json", by_alias=True)


def money(amount: str | Decimal, currency: str = "") -> str:
    return f"{amount} {currency}".strip()


def show_order(order: OrderView, title: str | None = None) -> None:
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    billing = order.billing
    rows = [
        ("id", str(order.id)),
        ("order_id", str(order.order_id)),
        ("customer", order.customer_id + (f" (user {order.user_id})" if order.user_id else "")),
        ("billing", f"{billing.first_name} {billing.last_name} <{billing.email}>"),
        ("status", order.status.value),
        (
            "total",
            f"{money(order.total, order.currency)} (subtotal {order.subtotal}, tax "
            f"{order.total_tax})",
        ),
        ("version", str(order.version)),
        ("created", order.created_at),
        ("updated", order.updated_at),
    ]
    if order.notes:
        rows.append(("notes", order.notes))
    if order.metadata:
        rows.append(("metadata", json.dumps(order.metadata, default=str)))
    for name, value in rows:
        summary.add_row(name, escape(value))
    if title:
        out.print(f"[bold]{escape(title)}[/bold]")
    out.print(summary)
    items = Table(title="items", title_justify="left")
    for column in ("product_id", "product", "quantity", "price"):
        items.add_column(column, justify="right" if column in {"quantity", "price"} else "left")
    for item in order.items:
        items.add_row(
            str(item.product_id), escape(item.product_name), str(item.quantity), item.price
        )
    out.print(items)
    history = Table(title="history", title_justify="left")
    for column in ("at", "from", "to", "action", "notes / reason"):
        history.add_column(column)
    for entry in order.status_history:
        remark = " / ".join(text for text in (entry.notes, entry.reason) if text)
        history.add_row(entry.at, entry.from_ or "-", entry.to.value, entry.action, escape(remark))
    out.print(history)


def orders_table(orders: Iterable[OrderView], caption: str | None = None) -> Table:
    table = Table(caption=caption)
    for column in ("id", "order_id", "customer", "status", "total", "items", "created_at"):
        table.add_column(column, justify="right" if column in {"id", "total", "items"} else "left")
    for order in orders:
        table.add_row(
            str(order.id),
            str(order.order_id),
            escape(order.customer_id),
            order.status.value,
            money(order.total, order.currency),
            str(len(order.items)),
            order.created_at,
        )
    return table


def event_line(event: OrderEvent) -> str:
    at = event.occurred_at[11:23]
    if isinstance(event, OrderPlaced):
        order = event.order
        return (
            f"{at} order.placed id={order.id} order_id={order.order_id} "
            f"customer={order.customer_id} total={money(order.total, order.currency)} "
            f"status={order.status.value}"
        )
    if isinstance(event, OrderStatusChanged):
        extra = "".join(
            f" {name}={value!r}"
            for name, value in (("notes", event.notes), ("reason", event.reason))
            if value
        )
        return (
            f"{at} order.status_changed id={event.id} order_id={event.order_id} "
            f"{event.from_status.value} -> {event.to_status.value} ({event.action}) "
            f"v{event.version}{extra}"
        )
    if isinstance(event, OrderMetadataUpdated):
        return (
            f"{at} order.metadata_updated id={event.id} order_id={event.order_id} "
            f"v{event.version} metadata={json.dumps(event.metadata, default=str)}"
        )
    assert isinstance(event, OrderCommandRejected)
    return (
        f"{at} order.command_rejected {event.routing_key}: {event.error.code} {event.error.message}"
    )
