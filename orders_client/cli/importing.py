"""`orders import`: many orders from a JSONL file, safe to re-run."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError as PydanticValidationError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from orders_client.cli.errors import CliError, error_line, validation_summary
from orders_client.cli.render import echo_json, err, out
from orders_client.cli.session import run
from orders_client.client import OrdersClient, decode_json
from orders_client.errors import OrdersError
from schemas import PlaceOrder

commands = typer.Typer()


@dataclass
class ImportSummary:
    placed: int = 0
    duplicates: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)


def _canonical(body: dict[str, Any]) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)


def _import_key(canonical: str, occurrence: int, prefix: str) -> str:
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:32]
    return f"{prefix}-{digest}-{occurrence}"


def _import_lines(path: Path, prefix: str) -> tuple[list[tuple[int, PlaceOrder]], ImportSummary]:
    """The commands of a JSONL file; lines that are not a valid PlaceOrder are rejected."""
    summary = ImportSummary()
    commands: list[tuple[int, PlaceOrder]] = []
    seen: Counter[str] = Counter()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise CliError(f"{path} is not UTF-8: {exc}") from exc
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            body = decode_json(line.encode())
        except ValueError as exc:
            summary.rejected.append((number, f"not JSON: {exc}"))
            continue
        if not isinstance(body, dict):
            summary.rejected.append((number, "not a JSON object"))
            continue
        if "idempotency_key" not in body:
            canonical = _canonical(body)
            seen[canonical] += 1
            body["idempotency_key"] = _import_key(canonical, seen[canonical], prefix)
        try:
            commands.append((number, PlaceOrder.model_validate(body)))
        except PydanticValidationError as exc:
            summary.rejected.append((number, validation_summary(exc)))
    return commands, summary


@commands.command(
    name="import",
    epilog="Example: orders import orders.jsonl --concurrency 32 (run it again: nothing doubles)",
)
def import_orders(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="One PlaceOrder JSON object per line.")],
    concurrency: Annotated[int, typer.Option(min=1, max=256, help="Places in flight.")] = 16,
    key_prefix: Annotated[
        str, typer.Option(help="Prefix of the idempotency keys derived for lines without one.")
    ] = "import",
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Place many orders from a JSONL file, safe to re-run.

    A line without `idempotency_key` gets one derived from its content (and how many
    identical lines came before it), so running the same file again places nothing twice.
    """
    commands, summary = _import_lines(file, key_prefix)

    async def place_all(client: OrdersClient) -> None:
        slots = asyncio.Semaphore(concurrency)
        with Progress(
            TextColumn("placing"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=not err.is_terminal,
        ) as progress:
            task = progress.add_task("placing", total=len(commands))

            async def place_one(number: int, command: PlaceOrder) -> None:
                async with slots:
                    try:
                        placed = await client.place_order(command)
                    except OrdersError as exc:
                        summary.rejected.append((number, error_line(exc)))
                    else:
                        if placed.created:
                            summary.placed += 1
                        else:
                            summary.duplicates += 1
                    progress.advance(task)

            await asyncio.gather(*(place_one(number, command) for number, command in commands))

    run(ctx, place_all)
    summary.rejected.sort()
    if json_out:
        echo_json(
            {
                "placed": summary.placed,
                "duplicates": summary.duplicates,
                "rejected": [{"line": n, "reason": r} for n, r in summary.rejected],
            }
        )
    else:
        table = Table(title=f"import of {file}", title_justify="left")
        table.add_column("outcome")
        table.add_column("orders", justify="right")
        table.add_row("placed", str(summary.placed))
        table.add_row("duplicates (placed before)", str(summary.duplicates))
        table.add_row("rejected", str(len(summary.rejected)))
        out.print(table)
        for number, reason in summary.rejected:
            typer.echo(f"line {number}: {reason}")
    if summary.rejected:
        raise typer.Exit(1)
