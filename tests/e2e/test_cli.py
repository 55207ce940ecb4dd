"""The `orders` console script, run as the installed entry point against the real worker."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from orders_client import DeadLetter, OrdersClient
from schemas import OrderPlaced, PlaceOrder

from .amqp_client import AmqpClient
from .contract import new_customer_id, simple_order
from .worker import Worker

ORDERS = Path(sys.executable).parent / "orders"
CLI_TIMEOUT = 60.0


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        assert self.code == 0, self
        return json.loads(self.stdout)

    def assert_one_line_error(self, starts: str) -> None:
        assert self.code == 1, self
        lines = self.stderr.strip().splitlines()
        assert len(lines) == 1, self.stderr
        assert lines[0].startswith(f"error: {starts}"), self.stderr
        assert "Traceback" not in self.stderr


Cli = Callable[..., Awaitable[Result]]


def _env(amqp_url: str) -> dict[str, str]:
    return {**os.environ, "ORDERS_AMQP_URL": amqp_url, "COLUMNS": "250", "NO_COLOR": "1"}


@pytest.fixture
def cli(worker: Worker, amqp_url: str) -> Cli:
    async def run(*args: str, url: str | None = None) -> Result:
        process = await asyncio.create_subprocess_exec(
            str(ORDERS),
            *args,
            env=_env(url or amqp_url),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), CLI_TIMEOUT)
        assert process.returncode is not None
        return Result(process.returncode, stdout.decode(), stderr.decode())

    return run


@pytest_asyncio.fixture(loop_scope="session")
async def orders(worker: Worker, amqp_url: str) -> AsyncIterator[OrdersClient]:
    async with OrdersClient(amqp_url) as client:
        yield client


COMMANDS = [
    [],
    ["place"],
    ["get"],
    ["act"],
    ["cancel"],
    ["complete"],
    ["list"],
    ["stats"],
    ["watch"],
    ["history"],
    ["import"],
    ["dead-letters"],
    ["dead-letters", "list"],
    ["dead-letters", "show"],
    ["dead-letters", "replay"],
    ["dead-letters", "purge"],
]


async def test_every_command_has_help_with_an_example(cli: Cli) -> None:
    for command in COMMANDS:
        result = await cli(*command, "--help")
        assert result.code == 0, (command, result)
        assert "Example" in result.stdout, (command, result.stdout)


async def test_place_get_and_actions(cli: Cli, tmp_path: Path) -> None:
    customer_id = new_customer_id()
    placed = (
        await cli(
            "place",
            "--customer",
            customer_id,
            "--item",
            "Window Cleaning:2:75.00",
            "--item",
            "sku-9:Polish:1:5",
            "--email",
            "jo@example.com",
            "--first-name",
            "Jo",
            "--last-name",
            "Doe",
            "--notes",
            "Call first",
            "--json",
        )
    ).json()
    assert placed["customer_id"] == customer_id
    assert [(i["product_id"], i["quantity"], i["price"]) for i in placed["items"]] == [
        (1, 2, "75.00"),
        ("sku-9", 1, "5.00"),
    ]
    assert placed["total"] == "155.00"

    order_file = tmp_path / "order.json"
    order_file.write_text(json.dumps(simple_order(customer_id, price="20.00")))
    second = (await cli("place", str(order_file), "--json")).json()
    assert second["total"] == "20.00"

    assert (await cli("get", str(placed["id"]), "--json")).json() == placed
    shown = await cli("get", str(placed["order_id"]), "--order-id")
    assert shown.code == 0, shown
    assert customer_id in shown.stdout
    assert "Window Cleaning" in shown.stdout

    started = (
        await cli(
            "act",
            str(placed["id"]),
            "update_status",
            "--status",
            "in_progress",
            "--notes",
            "Crew on site",
            "--json",
        )
    ).json()
    assert (started["status"], started["version"]) == ("in_progress", 2)
    assert started["status_history"][-1]["notes"] == "Crew on site"
    done = (await cli("complete", str(placed["id"]), "--json")).json()
    assert done["status"] == "completed"
    tagged = await cli("act", str(second["id"]), "update_metadata", "--metadata", '{"k": 1}')
    assert tagged.code == 0, tagged
    assert "version 2" in tagged.stdout
    cancelled = (
        await cli("cancel", str(second["id"]), "--reason", "Customer asked", "--json")
    ).json()
    assert cancelled["status_history"][-1]["reason"] == "Customer asked"


async def test_errors_are_one_line_and_exit_non_zero(cli: Cli, orders: OrdersClient) -> None:
    order = await orders.place(PlaceOrder.model_validate(simple_order(new_customer_id())))
    await orders.request("orders.action", {"id": order.id, "action": "cancel"})

    (await cli("complete", str(order.id))).assert_one_line_error("invalid_transition")
    (await cli("get", str(2**40))).assert_one_line_error("not_found")
    (
        await cli(
            "act", str(order.id), "update_status", "--status", "pending", "--expected-version", "1"
        )
    ).assert_one_line_error("version_conflict")
    (await cli("place", "--customer", "c")).assert_one_line_error("without FILE")
    (await cli("list", "--from", "2026-13-01")).assert_one_line_error("invalid")
    assert (await cli("statuses-typo")).code == 2  # a usage error
    unreachable = await cli("list", url="amqp://guest:guest@127.0.0.1:1/")
    unreachable.assert_one_line_error("connection_error")


async def test_list_with_filters_and_all_pages(cli: Cli, orders: OrdersClient) -> None:
    customer_id = new_customer_id()
    placed = await asyncio.gather(
        *(orders.place(PlaceOrder.model_validate(simple_order(customer_id))) for _ in range(5))
    )
    await orders.request("orders.action", {"id": placed[0].id, "action": "cancel"})

    page = (await cli("list", "--customer", customer_id, "--per-page", "2", "--json")).json()
    assert page["pagination"] == {"current_page": 1, "per_page": 2, "total": 5, "last_page": 3}
    every = (
        await cli("list", "--customer", customer_id, "--all", "--per-page", "2", "--json")
    ).json()
    assert sorted(o["id"] for o in every) == sorted(o.id for o in placed)
    active = (
        await cli("list", "--customer", customer_id, "--active-only", "--all", "--json")
    ).json()
    assert len(active) == 4
    table = await cli(
        "list",
        "--customer",
        customer_id,
        "--status",
        "pending",
        "--status",
        "cancelled",
        "--order-by",
        "id",
        "--direction",
        "asc",
    )
    assert table.code == 0, table
    assert "page 1 of 1 (5 orders)" in table.stdout
    assert all(str(o.order_id) in table.stdout for o in placed)


async def test_stats_table_and_chart(cli: Cli, orders: OrdersClient) -> None:
    customer_id = new_customer_id()
    for price in ("10.00", "32.50"):
        await orders.place(PlaceOrder.model_validate(simple_order(customer_id, price=price)))
    stats = (await cli("stats", "--customer", customer_id, "--json")).json()
    assert stats["total_orders"] == 2
    assert Decimal(stats["total_revenue"]) == Decimal("42.50")
    shown = await cli("stats", "--customer", customer_id)
    assert shown.code == 0, shown
    for text in ("pending", "total revenue", "42.50", "revenue by day", "█"):
        assert text in shown.stdout, shown.stdout


async def _start_watch(amqp_url: str, *args: str) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        str(ORDERS),
        "watch",
        *args,
        env=_env(amqp_url),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    first = await asyncio.wait_for(process.stderr.readline(), 30)
    assert first.startswith(b"watching"), first  # subscribed: events from now on arrive
    return process


async def test_watch_tails_events(worker: Worker, amqp_url: str, orders: OrdersClient) -> None:
    every = await _start_watch(amqp_url, "--json")
    changes = await _start_watch(amqp_url, "order.status_changed", "--count", "2")
    try:
        order = await orders.place(PlaceOrder.model_validate(simple_order(new_customer_id())))
        await orders.request(
            "orders.action", {"id": order.id, "action": "update_status", "status": "confirmed"}
        )
        await orders.request("orders.action", {"id": order.id, "action": "cancel"})

        stdout, _ = await asyncio.wait_for(changes.communicate(), 30)
        assert changes.returncode == 0
        lines = stdout.decode().splitlines()
        assert len(lines) == 2, lines
        assert f"id={order.id}" in lines[0]
        assert "pending -> confirmed" in lines[0]
        assert "confirmed -> cancelled (cancel)" in lines[1]

        assert every.stdout is not None
        mine: list[dict[str, Any]] = []
        async with asyncio.timeout(30):
            while len(mine) < 3:
                event = json.loads(await every.stdout.readline())
                if event.get("id") == order.id or event.get("order", {}).get("id") == order.id:
                    mine.append(event)
        assert [e["event_type"] for e in mine] == [
            "order.placed",
            "order.status_changed",
            "order.status_changed",
        ]
        every.send_signal(signal.SIGINT)
        await asyncio.wait_for(every.wait(), 30)
        assert every.returncode == 0
    finally:
        for process in (every, changes):
            if process.returncode is None:
                process.kill()
                await process.wait()


async def test_import_is_safe_to_rerun(cli: Cli, orders: OrdersClient, tmp_path: Path) -> None:
    customer_id = new_customer_id()
    key = f"import-test-{uuid.uuid4().hex}"
    lines = [
        json.dumps(simple_order(customer_id, price="1.00")),
        json.dumps(simple_order(customer_id, price="2.00")),
        json.dumps(simple_order(customer_id, price="3.00")),
        json.dumps(simple_order(customer_id, price="1.00")),  # the same again: a second order
        json.dumps(simple_order(customer_id, price="4.00", idempotency_key=key)),
        json.dumps(simple_order(customer_id, price="4.00", idempotency_key=key)),
        "{not json",
        json.dumps({"customer_id": customer_id, "items": []}),
        "",
    ]
    path = tmp_path / "orders.jsonl"
    path.write_text("\n".join(lines))

    first = await cli("import", str(path), "--json")
    assert first.code == 1, first
    summary = json.loads(first.stdout)
    assert (summary["placed"], summary["duplicates"]) == (5, 1)
    assert [r["line"] for r in summary["rejected"]] == [7, 8]
    assert "not JSON" in summary["rejected"][0]["reason"]
    assert "items" in summary["rejected"][1]["reason"]

    again = await cli("import", str(path))
    assert again.code == 1, again
    assert "line 7: not JSON" in again.stdout
    assert "duplicates" in again.stdout
    page = await orders.list(customer_id=customer_id)
    assert page.total == 5
    rerun = json.loads((await cli("import", str(path), "--json")).stdout)
    assert (rerun["placed"], rerun["duplicates"]) == (0, 6)


async def _wait_for_dead_letter(orders: OrdersClient, message_id: str) -> DeadLetter:
    async with asyncio.timeout(15):
        while True:
            for letter in await orders.dead_letters():
                if letter.message_id == message_id:
                    return letter
            await asyncio.sleep(0.1)  # basic.get has no blocking form: poll interval


async def test_dead_letters_list_show_replay_purge(
    cli: Cli, orders: OrdersClient, amqp_client: AmqpClient, tmp_path: Path
) -> None:
    customer_id = new_customer_id()
    broken = simple_order(customer_id)
    del broken["billing"]
    message_id = await amqp_client.publish("orders.place", broken)  # no reply_to
    await _wait_for_dead_letter(orders, message_id)

    listed = (await cli("dead-letters", "list", "--json")).json()
    entry = next(letter for letter in listed if letter["message_id"] == message_id)
    assert entry["error_code"] == "validation_error"
    assert entry["routing_key"] == "orders.place"
    table = await cli("dead-letters", "list")
    assert table.code == 0, table
    assert message_id in table.stdout
    shown = (await cli("dead-letters", "show", message_id)).json()
    assert shown["body"] == broken

    fixed = tmp_path / "fixed.json"
    fixed.write_text(json.dumps(simple_order(customer_id)))
    async with orders.events("order.placed") as events:
        replayed = await cli("dead-letters", "replay", message_id, "--body", str(fixed))
        assert replayed.code == 0, replayed
        assert "replayed" in replayed.stdout
        async with asyncio.timeout(15):
            async for event in events:
                if isinstance(event, OrderPlaced) and event.order.customer_id == customer_id:
                    break
    listed = (await cli("dead-letters", "list", "--json")).json()
    assert message_id not in [letter["message_id"] for letter in listed]
    # Replaying the same fixed message again would not place a second order (message_id).
    assert (await orders.list(customer_id=customer_id)).total == 1

    other = await amqp_client.publish("orders.place", broken)
    await _wait_for_dead_letter(orders, other)
    purged = await cli("dead-letters", "purge", other)
    assert purged.code == 0, purged
    assert "purged 1" in purged.stdout
    (await cli("dead-letters", "show", other)).assert_one_line_error("no dead letter")
    (await cli("dead-letters", "replay")).assert_one_line_error("give dead-letter refs")
