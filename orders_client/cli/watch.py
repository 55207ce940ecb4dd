"""`orders watch`: a live tail of the events, or the history from `--since` and then live."""

from __future__ import annotations

from typing import Annotated

import typer

from orders_client.cli.options import Customer
from orders_client.cli.render import err, event_line
from orders_client.cli.replay import parse_since, replay_progress
from orders_client.cli.session import run
from orders_client.client import OrdersClient

commands = typer.Typer()


@commands.command(
    epilog="Examples: orders watch · orders watch 'order.status_changed' --json --count 10 · "
    "orders watch --since 2h · orders watch --since first --customer CUST-12345"
)
def watch(
    ctx: typer.Context,
    pattern: Annotated[
        str, typer.Argument(help="Routing-key pattern on the events exchange.")
    ] = "order.#",
    since: Annotated[
        str | None,
        typer.Option(
            help="Replay the event history first, from: first, a duration before now (2h, "
            "30m, 7d), an ISO timestamp, or a stream offset; then follow live events.",
        ),
    ] = None,
    customer: Customer = None,
    order: Annotated[
        int | None, typer.Option("--id", help="Only this order (database id).")
    ] = None,
    count: Annotated[int | None, typer.Option(min=1, help="Stop after this many events.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON event per line.")] = False,
) -> None:
    """Live tail of events, or the history from --since and then live (Ctrl-C stops)."""
    start = None if since is None else parse_since(since)

    async def tail(client: OrdersClient) -> None:
        events = client.events(pattern, since=start, id=order, customer_id=customer)
        async with events:
            where = (
                f"{client.events_exchange_name!r}"
                if start is None
                else f"{client.history_stream_name!r} since {since}"
            )
            err.print(
                f"watching {pattern!r} on {where} (Ctrl-C stops)", markup=False, highlight=False
            )
            then = "history replayed; following live events" if start is not None else None
            async with replay_progress(events, then=then):
                seen = 0
                async for event in events:
                    if json_out:
                        typer.echo(event.model_dump_json(by_alias=True))
                    else:
                        typer.echo(event_line(event))
                    seen += 1
                    if count is not None and seen >= count:
                        return

    try:
        run(ctx, tail)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
