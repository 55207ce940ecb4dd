"""Commands on orders: place, get, act (and its shorthands cancel and complete), list."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from orders_client.cli.errors import CliError
from orders_client.cli.options import (
    ActiveOnly,
    ByOrderId,
    Customer,
    DateFrom,
    DateTo,
    JsonOut,
    OrderRef,
    Search,
    StatusFilter,
    User,
    metadata_option,
    query_filters,
    read_json,
)
from orders_client.cli.render import dump, echo_json, orders_table, out, show_order
from orders_client.cli.session import run
from orders_client.client import OrdersClient
from schemas import ListOrders, OrderActionAdapter, OrderStatus, OrderView, PlaceOrder

commands = typer.Typer()

OrderByName = Literal[
    "created_at", "updated_at", "total", "order_id", "id", "status", "customer_id"
]
ActionName = Literal["update_status", "cancel", "complete", "update_metadata"]


# -- place ------------------------------------------------------------------------------------


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


@commands.command(
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
        body = read_json(file)
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
            "metadata": metadata_option(metadata),
            "idempotency_key": idempotency_key,
        }
        body = {key: value for key, value in body.items() if value is not None}
    command = PlaceOrder.model_validate(body)
    placed = run(ctx, lambda client: client.place_order(command))
    if json_out:
        echo_json(dump(placed.order))
    else:
        verb = "Placed" if placed.created else "Already placed (idempotency key seen before):"
        show_order(placed.order, f"{verb} order {placed.order.order_id} (id {placed.order.id})")


# -- get and actions --------------------------------------------------------------------------


def _target(ref: int, by_order_id: bool) -> dict[str, int]:
    return {"order_id": ref} if by_order_id else {"id": ref}


@commands.command(epilog="Examples: orders get 42 · orders get 377239278 --order-id --json")
def get(
    ctx: typer.Context, ref: OrderRef, by_order_id: ByOrderId = False, json_out: JsonOut = False
) -> None:
    """Show one order."""
    if by_order_id:
        order = run(ctx, lambda client: client.get(order_id=ref))
    else:
        order = run(ctx, lambda client: client.get(ref))
    if json_out:
        echo_json(dump(order))
    else:
        show_order(order)


def _named(
    action: str,
    ref: int,
    by_order_id: bool,
    expected_version: int | None,
    request_id: str | None,
    fields: dict[str, Any],
) -> dict[str, Any]:
    """The body of a shortcut command's action (`cancel`, `complete`)."""
    return {
        **_target(ref, by_order_id),
        "action": action,
        **fields,
        "expected_version": expected_version,
        "request_id": request_id,
    }


def _act(ctx: typer.Context, body: dict[str, Any], json_out: bool) -> None:
    action = OrderActionAdapter.validate_python(
        {key: value for key, value in body.items() if value is not None}
    )
    order = run(ctx, lambda client: client.act(action))
    if json_out:
        echo_json(dump(order))
    else:
        show_order(
            order,
            f"Order {order.order_id} (id {order.id}) is {order.status.value}, "
            f"version {order.version}",
        )


ExpectedVersion = Annotated[
    int | None, typer.Option(help="Refuse (version_conflict) unless the order is at it.")
]
RequestId = Annotated[str | None, typer.Option(help="A repeated request id is applied once.")]
Notes = Annotated[str | None, typer.Option(help="Notes for the history.")]


@commands.command(
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
            "metadata": metadata_option(metadata),
            "mode": mode,
            "expected_version": expected_version,
            "request_id": request_id,
        },
        json_out,
    )


@commands.command(epilog="Example: orders cancel 42 --reason 'Customer asked'")
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
    fields = {"reason": reason, "notes": notes}
    _act(ctx, _named("cancel", ref, by_order_id, expected_version, request_id, fields), json_out)


@commands.command(epilog="Example: orders complete 42 --notes 'Done, customer signed'")
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
    fields = {"notes": notes}
    _act(ctx, _named("complete", ref, by_order_id, expected_version, request_id, fields), json_out)


# -- list -------------------------------------------------------------------------------------


@commands.command(
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
    filters = query_filters(customer, user, status, active_only, search, date_from, date_to)
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

        orders = run(ctx, walk)
        if json_out:
            echo_json([dump(order) for order in orders])
        else:
            out.print(orders_table(orders, f"{len(orders)} orders"))
        return
    result = run(ctx, lambda client: client.list(query))
    if json_out:
        echo_json(
            {
                "data": [dump(order) for order in result.orders],
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
            orders_table(
                result.orders,
                f"page {result.current_page} of {result.last_page} ({result.total} orders)",
            )
        )
