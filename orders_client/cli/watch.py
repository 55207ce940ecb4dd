"""`orders watch`: a live tail of the events."""

from __future__ import annotations

from typing import Annotated

import typer

from orders_client.cli.render import err, event_line
from orders_client.cli.session import run
from orders_client.client import OrdersClient

commands = typer.Typer()


@commands.command(
    epilog="Examples: orders watch · orders watch 'order.status_changed' --json --count 10"
)
def watch(
    ctx: typer.Context,
    pattern: Annotated[
        str, typer.Argument(help="Routing-key pattern on the events exchange.")
    ] = "order.#",
    count: Annotated[int | None, typer.Option(min=1, help="Stop after this many events.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON event per line.")] = False,
) -> None:
    """Live tail of events (Ctrl-C stops)."""

    async def tail(client: OrdersClient) -> None:
        async with client.events(pattern) as events:
            err.print(
                f"watching {pattern!r} on {client.events_exchange_name!r} (Ctrl-C stops)",
                markup=False,
                highlight=False,
            )
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
