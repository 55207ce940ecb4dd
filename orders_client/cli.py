"""`orders`: the command line of the orders service, on top of `OrdersClient`.

Every command reads `ORDERS_AMQP_URL`, has `--help` with an example, and on an error
prints one line to stderr and exits non-zero (1; 2 for a usage error).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import typer
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from orders_client.client import (
    DEFAULT_TIMEOUT,
    DEFAULT_URL,
    DeadLetter,
    OrderEvent,
    OrdersClient,
    decode_json,
    encode_json,
)
from orders_client.errors import OrdersError
from schemas import (
    ListOrders,
    OrderActionAdapter,
    OrderCommandRejected,
    OrderMetadataUpdated,
    OrderPlaced,
    OrderStatsQuery,
    OrderStatus,
    OrderStatusChanged,
    OrderView,
    PlaceOrder,
    StatsView,
)

T = TypeVar("T")


OrderByName = Literal[
    "created_at", "updated_at", "total", "order_id", "id", "status", "customer_id"
]
ActionName = Literal["update_status", "cancel", "complete", "update_metadata"]

out = Console(soft_wrap=False)
err = Console(stderr=True)

app = typer.Typer(
    name="orders",
    help="Place, act on, query and watch orders of the orders service over RabbitMQ.",
    epilog="Example: ORDERS_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/ orders list "
    "--status pending",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
dead_letters_app = typer.Typer(
    help="Inspect the dead-letter queue (orders.dead) and replay fixed messages.",
    epilog="Example: orders dead-letters list",
    no_args_is_help=True,
)
app.add_typer(dead_letters_app, name="dead-letters")


class CliError(Exception):
    """A usage problem found by a command itself (bad file, bad option combination)."""


@dataclass(frozen=True)
class Connection:
    url: str
    timeout: float
    exchange: str
    events_exchange: str
    dead_letter_queue: str

    def client(self) -> OrdersClient:
        return OrdersClient(
            self.url,
            timeout=self.timeout,
            exchange=self.exchange,
            events_exchange=self.events_exchange,
            dead_letter_queue=self.dead_letter_queue,
        )


@app.callback()
def _options(
    ctx: typer.Context,
    url: Annotated[
        str,
        typer.Option("--url", envvar="ORDERS_AMQP_URL", show_default=False, help="RabbitMQ URL."),
    ] = DEFAULT_URL,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for each reply.", min=0.01)
    ] = DEFAULT_TIMEOUT,
    exchange: Annotated[
        str, typer.Option(envvar="ORDERS_EXCHANGE", help="Commands and queries exchange.")
    ] = "orders",
    events_exchange: Annotated[
        str, typer.Option(envvar="ORDERS_EVENTS_EXCHANGE", help="Events exchange.")
    ] = "orders.events",
    dead_letter_queue: Annotated[
        str, typer.Option(envvar="ORDERS_DEAD_LETTER_QUEUE", help="Dead-letter queue.")
    ] = "orders.dead",
) -> None:
    ctx.obj = Connection(url, timeout, exchange, events_exchange, dead_letter_queue)


def _run(ctx: typer.Context, work: Callable[[OrdersClient], Awaitable[T]]) -> T:
    connection = ctx.find_object(Connection)
    assert connection is not None

    async def session() -> T:
        async with connection.client() as client:
            return await work(client)

    return asyncio.run(session())


def _echo_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def _dump(model: BaseModel) -> Any:
    return model.model_dump(mode="json", by_alias=True)


# -- options shared by list and stats ---------------------------------------------------------

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


def _filters(
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


# -- rendering --------------------------------------------------------------------------------


def _money(amount: str | Decimal, currency: str = "") -> str:
    return f"{amount} {currency}".strip()


def _show_order(order: OrderView, title: str | None = None) -> None:
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
            f"{_money(order.total, order.currency)} (subtotal {order.subtotal}, tax "
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


def _orders_table(orders: Iterable[OrderView], caption: str | None = None) -> Table:
    table = Table(caption=caption)
    for column in ("id", "order_id", "customer", "status", "total", "items", "created_at"):
        table.add_column(column, justify="right" if column in {"id", "total", "items"} else "left")
    for order in orders:
        table.add_row(
            str(order.id),
            str(order.order_id),
            escape(order.customer_id),
            order.status.value,
            _money(order.total, order.currency),
            str(len(order.items)),
            order.created_at,
        )
    return table


def _event_line(event: OrderEvent) -> str:
    at = event.occurred_at[11:23]
    if isinstance(event, OrderPlaced):
        order = event.order
        return (
            f"{at} order.placed id={order.id} order_id={order.order_id} "
            f"customer={order.customer_id} total={_money(order.total, order.currency)} "
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


# -- place ------------------------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        return decode_json(text.encode())
    except ValueError as exc:
        raise CliError(f"{path} is not JSON: {exc}") from exc


def _parse_item(text: str, position: int) -> dict[str, Any]:
    parts = text.rsplit(":", 2)
    if len(parts) != 3:
        raise CliError(f"--item {text!r}: expected [PRODUCT_ID:]NAME:QUANTITY:PRICE")
    head, quantity, price = parts
    product_id: int | str = position
    name = head
    if ":" in head:
        raw_id, name = head.split(":", 1)
        product_id = int(raw_id) if raw_id.isdigit() else raw_id
    if not quantity.strip().isdigit():
        raise CliError(f"--item {text!r}: quantity {quantity!r} is not a whole number")
    return {
        "product_id": product_id,
        "product_name": name,
        "quantity": int(quantity),
        "price": price.strip(),
    }


def _metadata_option(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return decode_json(text.encode())
    except ValueError as exc:
        raise CliError(f"--metadata is not JSON: {exc}") from exc


@app.command(
    epilog="Examples: orders place order.json\n\n"
    'orders place --customer CUST-1 --item "Window Cleaning:2:75.00" --email jo@example.com '
    "--first-name Jo --last-name Doe"
)
def place(
    ctx: typer.Context,
    file: Annotated[
        Path | None, typer.Argument(help="A PlaceOrder JSON file ('-' for stdin).")
    ] = None,
    customer: Annotated[str | None, typer.Option(help="customer_id.")] = None,
    item: Annotated[
        list[str] | None,
        typer.Option(
            help="[PRODUCT_ID:]NAME:QUANTITY:PRICE; repeat for several items "
            "(product_id defaults to the item's position)."
        ),
    ] = None,
    email: Annotated[str | None, typer.Option(help="Billing e-mail.")] = None,
    first_name: Annotated[str | None, typer.Option(help="Billing first name.")] = None,
    last_name: Annotated[str | None, typer.Option(help="Billing last name.")] = None,
    phone: Annotated[str | None, typer.Option(help="Billing phone.")] = None,
    user: Annotated[str | None, typer.Option(help="user_id.")] = None,
    notes: Annotated[str | None, typer.Option(help="Order notes.")] = None,
    currency: Annotated[str | None, typer.Option(help="ISO 4217 code.")] = None,
    status: Annotated[OrderStatus | None, typer.Option(help="Initial status.")] = None,
    total_tax: Annotated[str | None, typer.Option(help="Tax amount, e.g. 21.00.")] = None,
    metadata: Annotated[str | None, typer.Option(help="A JSON object.")] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Placing the same key again creates nothing.")
    ] = None,
    json_out: JsonOut = False,
) -> None:
    """Place an order, from a JSON file or from options."""
    if file is not None:
        body = _read_json(file)
        if not isinstance(body, dict):
            raise CliError(f"{file} must hold one JSON object")
        if idempotency_key:
            body["idempotency_key"] = idempotency_key
    else:
        missing = [
            name
            for name, value in (
                ("--customer", customer),
                ("--item", item),
                ("--email", email),
                ("--first-name", first_name),
                ("--last-name", last_name),
            )
            if not value
        ]
        if missing:
            raise CliError(f"without FILE, give {', '.join(missing)}")
        billing = {"first_name": first_name, "last_name": last_name, "email": email, "phone": phone}
        body = {
            "customer_id": customer,
            "items": [_parse_item(text, n) for n, text in enumerate(item or [], 1)],
            "billing": {key: value for key, value in billing.items() if value is not None},
            "user_id": user,
            "notes": notes,
            "currency": currency,
            "status": status,
            "total_tax": total_tax,
            "metadata": _metadata_option(metadata),
            "idempotency_key": idempotency_key,
        }
        body = {key: value for key, value in body.items() if value is not None}
    command = PlaceOrder.model_validate(body)
    placed = _run(ctx, lambda client: client.place_order(command))
    if json_out:
        _echo_json(_dump(placed.order))
    else:
        verb = "Placed" if placed.created else "Already placed (idempotency key seen before):"
        _show_order(placed.order, f"{verb} order {placed.order.order_id} (id {placed.order.id})")


# -- get and actions --------------------------------------------------------------------------


def _target(ref: int, by_order_id: bool) -> dict[str, int]:
    return {"order_id": ref} if by_order_id else {"id": ref}


@app.command(epilog="Examples: orders get 42 · orders get 377239278 --order-id --json")
def get(
    ctx: typer.Context, ref: OrderRef, by_order_id: ByOrderId = False, json_out: JsonOut = False
) -> None:
    """Show one order."""
    if by_order_id:
        order = _run(ctx, lambda client: client.get(order_id=ref))
    else:
        order = _run(ctx, lambda client: client.get(ref))
    if json_out:
        _echo_json(_dump(order))
    else:
        _show_order(order)


def _act(ctx: typer.Context, body: dict[str, Any], json_out: bool) -> None:
    action = OrderActionAdapter.validate_python(
        {key: value for key, value in body.items() if value is not None}
    )
    order = _run(ctx, lambda client: client.act(action))
    if json_out:
        _echo_json(_dump(order))
    else:
        _show_order(
            order,
            f"Order {order.order_id} (id {order.id}) is {order.status.value}, "
            f"version {order.version}",
        )


ExpectedVersion = Annotated[
    int | None, typer.Option(help="Refuse (version_conflict) unless the order is at it.")
]
RequestId = Annotated[str | None, typer.Option(help="A repeated request id is applied once.")]
Notes = Annotated[str | None, typer.Option(help="Notes for the history.")]


@app.command(
    epilog="Examples: orders act 42 update_status --status in_progress --notes 'Crew on site'"
    ' · orders act 42 update_metadata --metadata \'{"priority": "high"}\''
)
def act(
    ctx: typer.Context,
    ref: OrderRef,
    action: Annotated[ActionName, typer.Argument(help="The action.")],
    status: Annotated[OrderStatus | None, typer.Option(help="For update_status.")] = None,
    notes: Notes = None,
    reason: Annotated[str | None, typer.Option(help="For cancel.")] = None,
    metadata: Annotated[str | None, typer.Option(help="For update_metadata: JSON.")] = None,
    mode: Annotated[
        Literal["merge", "replace"] | None,
        typer.Option(help="For update_metadata (default merge)."),
    ] = None,
    expected_version: ExpectedVersion = None,
    request_id: RequestId = None,
    by_order_id: ByOrderId = False,
    json_out: JsonOut = False,
) -> None:
    """Apply an action to an order: update_status, cancel, complete or update_metadata."""
    _act(
        ctx,
        {
            **_target(ref, by_order_id),
            "action": action,
            "status": status,
            "notes": notes,
            "reason": reason,
            "metadata": _metadata_option(metadata),
            "mode": mode,
            "expected_version": expected_version,
            "request_id": request_id,
        },
        json_out,
    )


@app.command(epilog="Example: orders cancel 42 --reason 'Customer asked'")
def cancel(
    ctx: typer.Context,
    ref: OrderRef,
    reason: Annotated[str | None, typer.Option(help="Why.")] = None,
    notes: Notes = None,
    expected_version: ExpectedVersion = None,
    request_id: RequestId = None,
    by_order_id: ByOrderId = False,
    json_out: JsonOut = False,
) -> None:
    """Cancel an order."""
    _act(
        ctx,
        {
            **_target(ref, by_order_id),
            "action": "cancel",
            "reason": reason,
            "notes": notes,
            "expected_version": expected_version,
            "request_id": request_id,
        },
        json_out,
    )


@app.command(epilog="Example: orders complete 42 --notes 'Done, customer signed'")
def complete(
    ctx: typer.Context,
    ref: OrderRef,
    notes: Notes = None,
    expected_version: ExpectedVersion = None,
    request_id: RequestId = None,
    by_order_id: ByOrderId = False,
    json_out: JsonOut = False,
) -> None:
    """Complete an order."""
    _act(
        ctx,
        {
            **_target(ref, by_order_id),
            "action": "complete",
            "notes": notes,
            "expected_version": expected_version,
            "request_id": request_id,
        },
        json_out,
    )


# -- list and stats ---------------------------------------------------------------------------


@app.command(
    name="list",
    epilog="Examples: orders list --customer CUST-1 --status pending --status on_hold"
    " · orders list --from 2026-11-01 --all --json",
)
def list_orders(
    ctx: typer.Context,
    customer: Customer = None,
    user: User = None,
    status: StatusFilter = None,
    active_only: ActiveOnly = False,
    search: Search = None,
    date_from: DateFrom = None,
    date_to: DateTo = None,
    order_by: Annotated[OrderByName, typer.Option(help="Sort field.")] = "created_at",
    direction: Annotated[Literal["asc", "desc"], typer.Option(help="Sort direction.")] = "desc",
    page: Annotated[int, typer.Option(min=1, help="Page number.")] = 1,
    per_page: Annotated[int, typer.Option(min=1, max=100, help="Orders per page.")] = 15,
    all_pages: Annotated[bool, typer.Option("--all", help="Walk every page.")] = False,
    json_out: JsonOut = False,
) -> None:
    """List orders, one page (or --all) as a table."""
    filters = _filters(customer, user, status, active_only, search, date_from, date_to)
    query = ListOrders.model_validate(
        {
            **filters,
            "order_by": order_by,
            "order_direction": direction,
            "per_page": per_page,
            **({} if all_pages else {"page": page}),
        }
    )
    if all_pages:

        async def walk(client: OrdersClient) -> list[OrderView]:
            return [order async for order in client.iter_orders(query)]

        orders = _run(ctx, walk)
        if json_out:
            _echo_json([_dump(order) for order in orders])
        else:
            out.print(_orders_table(orders, f"{len(orders)} orders"))
        return
    result = _run(ctx, lambda client: client.list(query))
    if json_out:
        _echo_json(
            {
                "data": [_dump(order) for order in result.orders],
                "pagination": {
                    "current_page": result.current_page,
                    "per_page": result.per_page,
                    "total": result.total,
                    "last_page": result.last_page,
                },
            }
        )
    else:
        out.print(
            _orders_table(
                result.orders,
                f"page {result.current_page} of {result.last_page} ({result.total} orders)",
            )
        )


def _bar(value: Decimal, largest: Decimal, width: int = 40) -> str:
    if largest <= 0:
        return ""
    eighths = int(value / largest * width * 8)
    return "█" * (eighths // 8) + ("", "▏", "▎", "▍", "▌", "▋", "▊", "▉")[eighths % 8]


def _show_stats(stats: StatsView, days: int) -> None:
    counts = Table(title="orders", title_justify="left")
    counts.add_column("status")
    counts.add_column("orders", justify="right")
    for status in OrderStatus:
        counts.add_row(status.value, str(stats.status_breakdown.get(status.value, 0)))
    counts.add_section()
    counts.add_row("active", str(stats.active_orders))
    counts.add_row("[bold]total[/bold]", f"[bold]{stats.total_orders}[/bold]")
    out.print(counts)

    revenue = Table(title="revenue", title_justify="left", show_header=False)
    revenue.add_column("")
    revenue.add_column("", justify="right")
    revenue.add_row("total revenue", str(stats.total_revenue))
    revenue.add_row("average order value", str(stats.average_order_value))
    for currency, amount in sorted(stats.revenue_by_currency.items()):
        revenue.add_row(f"revenue in {currency}", str(amount))
    revenue.add_row("unique customers", str(stats.unique_customers))
    revenue.add_row("repeat customers", str(stats.repeat_customers))
    out.print(revenue)

    if stats.top_customers:
        top = Table(title="top customers", title_justify="left")
        for column in ("customer", "orders", "revenue"):
            top.add_column(column, justify="left" if column == "customer" else "right")
        for customer in stats.top_customers:
            top.add_row(escape(customer.customer_id), str(customer.orders), str(customer.revenue))
        out.print(top)

    recent = sorted(stats.revenue_by_day, key=lambda day: day.date)[-days:]
    chart = Table(
        title=f"revenue by day (last {len(recent)} days with orders)", title_justify="left"
    )
    chart.add_column("date")
    chart.add_column("orders", justify="right")
    chart.add_column("revenue", justify="right")
    chart.add_column("", style="green", no_wrap=True)
    largest = max((day.revenue for day in recent), default=Decimal(0))
    for day in recent:
        chart.add_row(day.date, str(day.orders), str(day.revenue), _bar(day.revenue, largest))
    out.print(chart)


@app.command(epilog="Examples: orders stats · orders stats --customer CUST-1 --from 2026-11-01")
def stats(
    ctx: typer.Context,
    customer: Customer = None,
    user: User = None,
    status: StatusFilter = None,
    active_only: ActiveOnly = False,
    search: Search = None,
    date_from: DateFrom = None,
    date_to: DateTo = None,
    days: Annotated[int, typer.Option(min=1, help="Days in the revenue chart.")] = 30,
    json_out: JsonOut = False,
) -> None:
    """Counts and revenue, with a revenue-by-day chart."""
    query = OrderStatsQuery.model_validate(
        _filters(customer, user, status, active_only, search, date_from, date_to)
    )
    result = _run(ctx, lambda client: client.stats(query))
    if json_out:
        _echo_json(_dump(result))
    else:
        _show_stats(result, days)


# -- watch ------------------------------------------------------------------------------------


@app.command(
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
                    typer.echo(_event_line(event))
                seen += 1
                if count is not None and seen >= count:
                    return

    try:
        _run(ctx, tail)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


# -- import -----------------------------------------------------------------------------------


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
            summary.rejected.append((number, _validation_summary(exc)))
    return commands, summary


@app.command(
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
                        summary.rejected.append((number, _error_line(exc)))
                    else:
                        if placed.created:
                            summary.placed += 1
                        else:
                            summary.duplicates += 1
                    progress.advance(task)

            await asyncio.gather(*(place_one(number, command) for number, command in commands))

    _run(ctx, place_all)
    summary.rejected.sort()
    if json_out:
        _echo_json(
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


# -- dead letters -----------------------------------------------------------------------------


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


@dead_letters_app.command(name="list", epilog="Example: orders dead-letters list --limit 20")
def dead_letters_list(
    ctx: typer.Context,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many.")] = None,
    json_out: JsonOut = False,
) -> None:
    """List the dead letters (the queue is left unchanged)."""
    letters = _run(ctx, lambda client: client.dead_letters(limit=limit))
    if json_out:
        _echo_json([_letter_json(letter) for letter in letters])
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


@dead_letters_app.command(name="show", epilog="Example: orders dead-letters show 3")
def dead_letters_show(
    ctx: typer.Context, ref: Annotated[str, typer.Argument(help=REFS_HELP)]
) -> None:
    """Show one dead letter: headers and body, as JSON."""
    letters = _run(ctx, lambda client: client.dead_letters())
    for letter in letters:
        if letter.matches(ref):
            _echo_json(_letter_json(letter))
            return
    raise CliError(f"no dead letter {ref!r} ({len(letters)} in the queue)")


@dead_letters_app.command(
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
    new_body = None if body is None else encode_json(_read_json(body))
    replayed = _run(
        ctx, lambda client: client.replay_dead_letters(None if all_letters else refs, body=new_body)
    )
    if not replayed:
        raise CliError("no matching dead letter")
    for letter in replayed:
        typer.echo(
            f"replayed #{letter.position} {letter.message_id or '-'} to {letter.routing_key}"
        )


@dead_letters_app.command(
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
    removed = _run(ctx, lambda client: client.purge_dead_letters(None if all_letters else refs))
    typer.echo(f"purged {removed} dead letter(s)")


# -- entry point ------------------------------------------------------------------------------


def _validation_summary(exc: PydanticValidationError) -> str:
    problems = [
        f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}"
        for error in exc.errors()
    ]
    return "invalid: " + "; ".join(problems)


def _error_line(exc: OrdersError) -> str:
    text = str(exc)
    if isinstance(exc.details, list):
        problems = [
            f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg')}"
            for d in exc.details
            if isinstance(d, dict)
        ]
        if problems:
            text += " (" + "; ".join(problems) + ")"
    elif isinstance(exc.details, dict) and exc.details:
        text += " " + json.dumps(exc.details, default=str)
    return text


_CREDENTIALS = re.compile(r"(\w+://[^:/@\s]*):[^@\s]*@")


def _one_line(text: str) -> str:
    """One line, with any `scheme://user:password@` shown as `scheme://user:***@`."""
    return _CREDENTIALS.sub(r"\1:***@", " ".join(text.split()))


def main() -> None:
    """The `orders` console script."""
    # The AMQP libraries log connection failures themselves; the one error line says it.
    for name in ("aio_pika", "aiormq"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        app()
    except OrdersError as exc:
        message = _error_line(exc)
    except PydanticValidationError as exc:
        message = _validation_summary(exc)
    except CliError as exc:
        message = str(exc)
    except Exception as exc:
        message = f"unexpected {type(exc).__name__}: {exc}"
    else:
        return
    err.print(f"error: {_one_line(message)}", markup=False, highlight=False, soft_wrap=True)
    sys.exit(1)


if __name__ == "__main__":
    main()
