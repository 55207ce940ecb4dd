"""`orders history`: one order's events as the event history keeps them, beside the
`status_history` the order itself holds."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import typer
from rich.markup import escape
from rich.table import Table

from orders_client.cli.options import ByOrderId, JsonOut, OrderRef
from orders_client.cli.render import dump, echo_json, err, out
from orders_client.cli.replay import replay_progress
from orders_client.cli.session import run
from orders_client.client import OrdersClient
from orders_client.events import OrderEvent
from schemas import (
    OrderCommandRejected,
    OrderMetadataUpdated,
    OrderPlaced,
    OrderStatusChanged,
    OrderView,
)

commands = typer.Typer()

Entry = tuple[int | None, OrderEvent]
CLOCK_SKEW = timedelta(minutes=5)
"""How much earlier than the order's `created_at` the read starts: every event of an order is
published after it was created, by the service's clock, and the stream's timestamps are the
broker's."""


@commands.command(epilog="Examples: orders history 3 · orders history 421409 --order-id --json")
def history(
    ctx: typer.Context, ref: OrderRef, by_order_id: ByOrderId = False, json_out: JsonOut = False
) -> None:
    """One order's events from the event history (oldest first), and its status_history.

    The history is read from the order's creation on (five minutes earlier, for the clocks)."""

    async def read(client: OrdersClient) -> tuple[OrderView, list[Entry]]:
        order = await (client.get(order_id=ref) if by_order_id else client.get(ref))
        entries: list[Entry] = []
        since = datetime.fromisoformat(order.created_at) - CLOCK_SKEW
        events = client.events(since=since, id=order.id, order_id=order.order_id, follow=False)
        async with events, replay_progress(events):
            async for event in events:
                entries.append((events.position, event))  # noqa: PERF401 - position moves
        return order, entries

    order, entries = run(ctx, read)
    if json_out:
        echo_json(
            {
                "order": dump(order),
                "events": [{"offset": offset, "event": dump(event)} for offset, event in entries],
            }
        )
        return
    out.print(events_table(order, entries))
    out.print(status_history_table(order))
    if not entries:
        err.print(
            "no event of this order is in the history (older than its retention?)",
            markup=False,
            highlight=False,
        )


def events_table(order: OrderView, entries: list[Entry]) -> Table:
    table = Table(
        title=f"events of order {order.order_id} (id {order.id}) in the history",
        title_justify="left",
    )
    for column in ("offset", "occurred_at", "event", "change", "version", "event_id"):
        table.add_column(column, justify="right" if column in {"offset", "version"} else "left")
    for offset, event in entries:
        change, version = _change(event)
        table.add_row(
            "-" if offset is None else str(offset),
            event.occurred_at,
            event.event_type,
            escape(change),
            version,
            event.event_id,
        )
    return table


def _change(event: OrderEvent) -> tuple[str, str]:
    if isinstance(event, OrderPlaced):
        return f"placed as {event.order.status.value}", str(event.order.version)
    if isinstance(event, OrderStatusChanged):
        remark = " / ".join(text for text in (event.notes, event.reason) if text)
        change = f"{event.from_status.value} -> {event.to_status.value} ({event.action})"
        return change + (f" {remark}" if remark else ""), str(event.version)
    if isinstance(event, OrderMetadataUpdated):
        return f"metadata {json.dumps(event.metadata, default=str)}", str(event.version)
    assert isinstance(event, OrderCommandRejected)
    return f"{event.routing_key} refused: {event.error.code}", "-"


def status_history_table(order: OrderView) -> Table:
    table = Table(title="its status_history", title_justify="left")
    for column in ("at", "from", "to", "action", "notes / reason"):
        table.add_column(column)
    for entry in order.status_history:
        remark = " / ".join(text for text in (entry.notes, entry.reason) if text)
        table.add_row(entry.at, entry.from_ or "-", entry.to.value, entry.action, escape(remark))
    return table
