"""`orders dead-letters`: inspect the dead-letter queue and replay fixed messages."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from orders_client.cli.errors import CliError
from orders_client.cli.options import JsonOut, read_json
from orders_client.cli.render import echo_json, out
from orders_client.cli.session import run
from orders_client.client import DeadLetter, decode_json, encode_json

commands = typer.Typer(
    help="Inspect the dead-letter queue (orders.dead) and replay fixed messages.",
    epilog="Example: orders dead-letters list",
    no_args_is_help=True,
)


def _letter_json(letter: DeadLetter) -> dict[str, Any]:
    try:
        body: Any = decode_json(letter.body)
    except (ValueError, UnicodeDecodeError):
        body = letter.body.decode(errors="replace")
    return {
        "position": letter.position,
        "message_id": letter.message_id,
        "correlation_id": letter.correlation_id,
        "routing_key": letter.routing_key,
        "error_code": letter.error_code,
        "error_message": letter.error_message,
        "attempts": letter.attempts,
        "headers": letter.headers,
        "body": body,
    }


@commands.command(name="list", epilog="Example: orders dead-letters list --limit 20")
def dead_letters_list(
    ctx: typer.Context,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many.")] = None,
    json_out: JsonOut = False,
) -> None:
    """List the dead letters (the queue is left unchanged)."""
    letters = run(ctx, lambda client: client.dead_letters(limit=limit))
    if json_out:
        echo_json([_letter_json(letter) for letter in letters])
        return
    table = Table(caption=f"{len(letters)} dead letter(s)")
    for column in ("#", "message_id", "routing_key", "error", "message", "body"):
        table.add_column(column, overflow="ellipsis", max_width=60 if column == "body" else None)
    for letter in letters:
        table.add_row(
            str(letter.position),
            letter.message_id or "-",
            letter.routing_key,
            letter.error_code or "-",
            escape((letter.error_message or "")[:80]),
            escape(letter.body[:120].decode(errors="replace")),
        )
    out.print(table)


REFS_HELP = "message_id or position (#) of a dead letter, as `list` shows it."


@commands.command(name="show", epilog="Example: orders dead-letters show 3")
def dead_letters_show(
    ctx: typer.Context, ref: Annotated[str, typer.Argument(help=REFS_HELP)]
) -> None:
    """Show one dead letter: headers and body, as JSON."""
    letters = run(ctx, lambda client: client.dead_letters())
    for letter in letters:
        if letter.matches(ref):
            echo_json(_letter_json(letter))
            return
    raise CliError(f"no dead letter {ref!r} ({len(letters)} in the queue)")


@commands.command(
    name="replay",
    epilog="Examples: orders dead-letters replay 3 --body fixed.json · "
    "orders dead-letters replay --all",
)
def dead_letters_replay(
    ctx: typer.Context,
    refs: Annotated[list[str] | None, typer.Argument(help=REFS_HELP)] = None,
    all_letters: Annotated[bool, typer.Option("--all", help="Replay every dead letter.")] = False,
    body: Annotated[
        Path | None, typer.Option(help="A fixed JSON body for the one selected message.")
    ] = None,
) -> None:
    """Publish dead letters again to their routing key (with a fixed body if given)."""
    if bool(refs) == all_letters:
        raise CliError("give dead-letter refs or --all (not both)")
    new_body = None if body is None else encode_json(read_json(body))
    replayed = run(
        ctx, lambda client: client.replay_dead_letters(None if all_letters else refs, body=new_body)
    )
    if not replayed:
        raise CliError("no matching dead letter")
    for letter in replayed:
        typer.echo(
            f"replayed #{letter.position} {letter.message_id or '-'} to {letter.routing_key}"
        )


@commands.command(
    name="purge",
    epilog="Examples: orders dead-letters purge 3 · orders dead-letters purge --all",
)
def dead_letters_purge(
    ctx: typer.Context,
    refs: Annotated[list[str] | None, typer.Argument(help=REFS_HELP)] = None,
    all_letters: Annotated[bool, typer.Option("--all", help="Delete every dead letter.")] = False,
) -> None:
    """Delete dead letters."""
    if bool(refs) == all_letters:
        raise CliError("give dead-letter refs or --all (not both)")
    removed = run(ctx, lambda client: client.purge_dead_letters(None if all_letters else refs))
    typer.echo(f"purged {removed} dead letter(s)")
