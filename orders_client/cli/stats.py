"""`orders stats`: counts and revenue, with a revenue-by-day chart."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from orders_client.cli.options import (
    ActiveOnly,
    Customer,
    DateFrom,
    DateTo,
    JsonOut,
    Search,
    StatusFilter,
    User,
    query_filters,
)
from orders_client.cli.render import dump, echo_json, out
from orders_client.cli.session import run
from schemas import OrderStatsQuery, OrderStatus, StatsView

commands = typer.Typer()


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


@commands.command(
    epilog="Examples: orders stats · orders stats --customer CUST-1 --from 2026-11-01"
)
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
        query_filters(customer, user, status, active_only, search, date_from, date_to)
    )
    result = run(ctx, lambda client: client.stats(query))
    if json_out:
        echo_json(dump(result))
    else:
        _show_stats(result, days)
