"""Options and inputs more than one command reads: the filters of list and stats, the
order reference, `--json`, JSON files and JSON options."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from orders_client.cli.errors import CliError
from orders_client.client import decode_json
from schemas import OrderStatus

Customer = Annotated[str | None, typer.Option("--customer", help="customer_id.")]
User = Annotated[str | None, typer.Option("--user", help="user_id.")]
StatusFilter = Annotated[
    list[OrderStatus] | None,
    typer.Option("--status", help="A status; repeat for several."),
]
ActiveOnly = Annotated[
    bool, typer.Option("--active-only", help="Exclude completed, cancelled, refunded.")
]
Search = Annotated[
    str | None, typer.Option(help="Substring of customer, names, email, phone; or an id.")
]
DateFrom = Annotated[str | None, typer.Option("--from", help="Created on or after, YYYY-MM-DD.")]
DateTo = Annotated[str | None, typer.Option("--to", help="Created on or before, YYYY-MM-DD.")]
JsonOut = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
ByOrderId = Annotated[
    bool, typer.Option("--order-id", help="ID is the public order number, not the database id.")
]
OrderRef = Annotated[int, typer.Argument(help="Database id (or order number with --order-id).")]


def query_filters(
    customer: str | None,
    user: str | None,
    status: Sequence[str] | None,
    active_only: bool,
    search: str | None,
    date_from: str | None,
    date_to: str | None,
) -> dict[str, Any]:
    filters: dict[str, Any] = {
        "customer_id": customer,
        "user_id": user,
        "status": list(status) if status else None,
        "search": search,
        "date_from": date_from,
        "date_to": date_to,
    }
    if active_only:
        filters["active_only"] = True
    return {key: value for key, value in filters.items() if value is not None}


def read_json(path: Path) -> Any:
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        return decode_json(text.encode())
    except ValueError as exc:
        raise CliError(f"{path} is not JSON: {exc}") from exc


def metadata_option(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return decode_json(text.encode())
    except ValueError as exc:
        raise CliError(f"--metadata is not JSON: {exc}") from exc
