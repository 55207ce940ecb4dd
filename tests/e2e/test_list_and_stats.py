"""ListOrders filters, sorting and paging, and OrderStats, over one customer's orders."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
import pytest_asyncio

from .amqp_client import AmqpClient, JSONObject, decode_object
from .contract import (
    STATUSES,
    act,
    assert_json_number,
    assert_success,
    list_orders,
    new_customer_id,
    place,
    simple_order,
)
from .gateway import Gateway, start_gateway, stop_gateway, wait_until_serving
from .worker import Worker

# (total, final status) of each order, placed in this order.
PLAN: list[tuple[str, str]] = [
    ("10.00", "pending"),
    ("20.00", "processing"),
    ("30.00", "completed"),
    ("40.00", "cancelled"),
    ("50.00", "pending"),
    ("60.00", "on_hold"),
]
PATHS: dict[str, list[str]] = {
    "pending": [],
    "processing": ["processing"],
    "completed": ["in_progress", "completed"],
    "cancelled": ["cancelled"],
    "on_hold": ["on_hold"],
}


@dataclass(frozen=True)
class Fixture:
    customer_id: str
    user_id: str
    orders: list[JSONObject]  # as they are after the status changes, in placing order
    day: date  # UTC day all of them were created on

    def ids(self, *indexes: int) -> set[int]:
        return {self.orders[i]["id"] for i in indexes}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def placed(worker: Worker, amqp_client: AmqpClient) -> Fixture:
    client = amqp_client
    customer_id = new_customer_id()
    user_id = f"user-{uuid.uuid4().hex}"
    day_before = datetime.now(UTC).date()
    orders: list[JSONObject] = []
    for index, (total, status) in enumerate(PLAN):
        body = simple_order(customer_id, price=total, email=f"person.{'abcdef'[index]}@example.com")
        if index == 1:
            body["user_id"] = user_id
        if index == 4:
            body["billing"] = {
                "first_name": "Zelda",
                "last_name": "Special",
                "email": "Special.Person@Example.COM",
            }
        order = await place(client, body)
        for next_status in PATHS[status]:
            order = assert_success(
                await act(client, order["id"], "update_status", status=next_status)
            )
        assert order["status"] == status
        orders.append(order)
    day_after = datetime.now(UTC).date()
    if day_before != day_after:
        pytest.skip("the UTC day changed while placing the orders")
    assert {o["created_at"][:10] for o in orders} == {day_before.isoformat()}, "created_at not UTC"
    return Fixture(customer_id, user_id, orders, day_before)


async def _ids(client: AmqpClient, placed: Fixture, **query: Any) -> set[int]:
    reply = await list_orders(client, customer_id=placed.customer_id, per_page=100, **query)
    ids = [row["id"] for row in reply["data"]]
    assert len(ids) == len(set(ids))
    assert reply["pagination"]["total"] == len(ids)
    return set(ids)


async def test_status_filter(client: AmqpClient, placed: Fixture) -> None:
    assert await _ids(client, placed, status="on_hold") == placed.ids(5)
    assert await _ids(client, placed, status=["pending", "processing"]) == placed.ids(0, 1, 4)
    assert await _ids(client, placed, status=["completed", "cancelled"]) == placed.ids(2, 3)
    assert await _ids(client, placed, status="refunded") == set()


async def test_active_only(client: AmqpClient, placed: Fixture) -> None:
    assert await _ids(client, placed, active_only=True) == placed.ids(0, 1, 4, 5)
    assert await _ids(client, placed, active_only=False) == placed.ids(0, 1, 2, 3, 4, 5)


async def test_user_id_filter(client: AmqpClient, placed: Fixture) -> None:
    assert await _ids(client, placed, user_id=placed.user_id) == placed.ids(1)


async def test_search_text_is_case_insensitive_substring(
    client: AmqpClient, placed: Fixture
) -> None:
    assert await _ids(client, placed, search="special.person@EXAMPLE") == placed.ids(4)
    assert await _ids(client, placed, search="PERSON.C@") == placed.ids(2)
    assert await _ids(client, placed, search="zeLD") == placed.ids(4)  # first name
    assert await _ids(client, placed, search="speCIAL") == placed.ids(4)  # last name, email
    customer_part = placed.customer_id[5:20].upper()
    assert await _ids(client, placed, search=customer_part) == placed.ids(0, 1, 2, 3, 4, 5)
    assert await _ids(client, placed, search="nobody-has-this") == set()


async def test_search_by_order_id_and_id_is_exact(client: AmqpClient, placed: Fixture) -> None:
    target = placed.orders[2]
    assert await _ids(client, placed, search=str(target["order_id"])) == {target["id"]}
    assert await _ids(client, placed, search=str(target["id"])) == {target["id"]}
    # Exact, not a prefix: a part of the number matches nothing (no digits in the text).
    assert await _ids(client, placed, search=str(target["order_id"])[:-1]) == set()


async def test_search_without_customer_finds_order_id(client: AmqpClient, placed: Fixture) -> None:
    target = placed.orders[3]
    reply = await list_orders(client, search=str(target["order_id"]))
    assert target["id"] in [row["id"] for row in reply["data"]]


async def test_date_filters_are_inclusive_utc_days(client: AmqpClient, placed: Fixture) -> None:
    today = placed.day.isoformat()
    tomorrow = (placed.day + timedelta(days=1)).isoformat()
    yesterday = (placed.day - timedelta(days=1)).isoformat()
    everything = placed.ids(0, 1, 2, 3, 4, 5)
    assert await _ids(client, placed, date_from=today, date_to=today) == everything
    assert await _ids(client, placed, date_from=today) == everything
    assert await _ids(client, placed, date_to=today) == everything
    assert await _ids(client, placed, date_from=yesterday, date_to=tomorrow) == everything
    assert await _ids(client, placed, date_from=tomorrow) == set()
    assert await _ids(client, placed, date_to=yesterday) == set()


async def test_order_by_total(client: AmqpClient, placed: Fixture) -> None:
    totals = sorted(Decimal(total) for total, _ in PLAN)
    asc = await list_orders(
        client, customer_id=placed.customer_id, order_by="total", order_direction="asc"
    )
    assert [Decimal(row["total"]) for row in asc["data"]] == totals
    desc = await list_orders(
        client, customer_id=placed.customer_id, order_by="total", order_direction="desc"
    )
    assert [Decimal(row["total"]) for row in desc["data"]] == totals[::-1]


async def test_default_order_is_created_at_desc(client: AmqpClient, placed: Fixture) -> None:
    reply = await list_orders(client, customer_id=placed.customer_id)
    assert [row["id"] for row in reply["data"]] == [o["id"] for o in reversed(placed.orders)]
    assert reply["pagination"] == {"current_page": 1, "per_page": 15, "total": 6, "last_page": 1}


@pytest.mark.parametrize(
    "order_by", ["created_at", "updated_at", "total", "order_id", "id", "status", "customer_id"]
)
async def test_every_documented_order_by_is_accepted(
    client: AmqpClient, placed: Fixture, order_by: str
) -> None:
    reply = await list_orders(
        client, customer_id=placed.customer_id, order_by=order_by, order_direction="asc"
    )
    assert len(reply["data"]) == len(PLAN)
    if order_by in {"order_id", "id"}:
        values = [row[order_by] for row in reply["data"]]
        assert values == sorted(values)


@pytest.mark.parametrize("per_page", [1, 2, 4, 6, 100])
async def test_paging(client: AmqpClient, placed: Fixture, per_page: int) -> None:
    expected_totals = sorted(Decimal(total) for total, _ in PLAN)
    last_page = max(1, math.ceil(len(PLAN) / per_page))
    seen: list[Decimal] = []
    for page in range(1, last_page + 1):
        reply = await list_orders(
            client,
            customer_id=placed.customer_id,
            order_by="total",
            order_direction="asc",
            per_page=per_page,
            page=page,
        )
        assert reply["pagination"] == {
            "current_page": page,
            "per_page": per_page,
            "total": len(PLAN),
            "last_page": last_page,
        }
        rows = reply["data"]
        assert len(rows) == min(per_page, len(PLAN) - (page - 1) * per_page)
        seen.extend(Decimal(row["total"]) for row in rows)
    assert seen == expected_totals


ORDER_BYS = ["created_at", "updated_at", "total", "order_id", "id", "status", "customer_id"]
FORGED_CURSORS = [
    "WyJhci02RGdibEpOUjEiLCIxZTk5OTkiLDFd",  # ["ar-6DgblJNR1","1e9999",1]: unsigned, huge total
    "WyJhci02RGdibEpOUjEiLCIxMC4wMCIsMV0",  # ["ar-6DgblJNR1","10.00",1]: unsigned
    "not a cursor",
    "é",
    "A" * 1000,
    "_-_-",
]


@pytest.fixture(scope="module")
def gateway(
    worker_process: Worker,
    amqp_url: str,
    mongo_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    """The HTTP gateway on the worker's database: a second process issuing cursors."""
    log_path = tmp_path_factory.mktemp("e2e-list-gateway") / "gateway.log"
    gateway = start_gateway(amqp_url, mongo_url, worker_process.database, log_path)
    try:
        wait_until_serving(gateway)
        yield gateway
    finally:
        stop_gateway(gateway)


def _http_list(gateway: Gateway, **query: Any) -> tuple[int, JSONObject]:
    response = httpx.get(
        f"{gateway.url}/api/orders/list", params=query, headers=gateway.auth, timeout=15.0
    )
    return response.status_code, decode_object(response.content)


@pytest.mark.parametrize("order_by", ORDER_BYS)
async def test_a_cursor_pages_through_every_order_once_over_amqp_and_http(
    client: AmqpClient, placed: Fixture, gateway: Gateway, order_by: str
) -> None:
    """Pages alternate between the worker (AMQP) and the gateway (HTTP): each accepts the
    other's cursors, and the walk is the page-mode listing, every order exactly once."""
    query = {"customer_id": placed.customer_id, "order_by": order_by, "order_direction": "asc"}
    listed = await list_orders(client, **query, per_page=100)
    expected = [row["id"] for row in listed["data"]]
    assert sorted(expected) == sorted(o["id"] for o in placed.orders)
    walked: list[int] = []
    cursor: str | None = ""
    for page in range(len(PLAN)):
        if cursor is None:
            break
        if page % 2 == 0:
            reply = await list_orders(client, **query, per_page=2, cursor=cursor)
        else:
            status, reply = _http_list(gateway, **query, per_page=2, cursor=cursor)
            assert status == 200, reply
        assert reply["pagination"]["current_page"] is None
        assert reply["pagination"]["total"] == len(PLAN)
        walked += [row["id"] for row in reply["data"]]
        cursor = reply["pagination"]["next_cursor"]
    assert cursor is None
    assert walked == expected


async def test_a_forged_cursor_is_a_validation_error_at_once(
    client: AmqpClient, placed: Fixture, gateway: Gateway, worker: Worker
) -> None:
    by_total = {"customer_id": placed.customer_id, "order_by": "total", "per_page": 2}
    issued = (await list_orders(client, **by_total, cursor=""))["pagination"]["next_cursor"]
    assert issued
    other_query = {**by_total, "order_by": "created_at"}
    cases = [(by_total, forged) for forged in FORGED_CURSORS]
    cases += [(other_query, issued), (by_total, issued[:-2]), (by_total, issued + "AA")]
    for query, cursor in cases:
        started = time.monotonic()
        reply = await client.request("orders.list", {**query, "cursor": cursor}, timeout=5.0)
        assert reply["success"] is False, cursor
        assert reply["error"]["code"] == "validation_error", reply
        assert reply["error"]["details"] == [
            {"loc": ["cursor"], "msg": "not a cursor of this query (same filters and sort)"}
        ]
        status, answer = _http_list(gateway, **query, cursor=cursor)
        assert (status, answer["error"]["code"]) == (422, "validation_error"), answer
        assert time.monotonic() - started < 5.0
    for process in (worker, gateway):
        assert "Traceback" not in process.log_tail(lines=10_000)


async def test_empty_list_has_last_page_one(client: AmqpClient) -> None:
    reply = await list_orders(client, customer_id=new_customer_id())
    assert reply["data"] == []
    assert reply["pagination"] == {"current_page": 1, "per_page": 15, "total": 0, "last_page": 1}


async def test_stats_for_a_customer(client: AmqpClient, placed: Fixture) -> None:
    stats = assert_success(
        await client.request("orders.stats", {"customer_id": placed.customer_id})
    )
    counted = [Decimal(t) for t, status in PLAN if status not in {"cancelled", "refunded"}]
    revenue = sum(counted, start=Decimal(0))
    assert revenue == Decimal("170.00")
    assert stats["total_orders"] == len(PLAN)
    assert_json_number(stats["total_revenue"], revenue)
    assert_json_number(
        stats["average_order_value"], (revenue / len(counted)).quantize(Decimal("0.01"))
    )
    assert stats["active_orders"] == 4
    breakdown = {status: sum(1 for _, s in PLAN if s == status) for status in STATUSES}
    assert stats["status_breakdown"] == breakdown
    for status in STATUSES:
        assert stats[f"{status}_orders"] == breakdown[status], status
    assert stats["unique_customers"] == 1
    assert stats["repeat_customers"] == 1

    by_day = stats["revenue_by_day"]
    assert isinstance(by_day, list)
    assert [row["date"] for row in by_day] == [placed.day.isoformat()]
    assert_json_number(by_day[0]["revenue"], revenue)
    top = stats["top_customers"]
    assert [row["customer_id"] for row in top] == [placed.customer_id]
    assert_json_number(top[0]["revenue"], revenue)
    assert "EUR" in str(stats["revenue_by_currency"])


async def test_stats_filters(client: AmqpClient, placed: Fixture) -> None:
    base = {"customer_id": placed.customer_id}
    cancelled = assert_success(
        await client.request("orders.stats", {**base, "status": "cancelled"})
    )
    assert cancelled["total_orders"] == 1
    assert cancelled["cancelled_orders"] == 1
    assert_json_number(cancelled["total_revenue"], 0)

    active = assert_success(await client.request("orders.stats", {**base, "active_only": True}))
    assert active["total_orders"] == 4
    assert_json_number(active["total_revenue"], Decimal("140.00"))
    assert_json_number(active["average_order_value"], Decimal("35.00"))

    tomorrow = (placed.day + timedelta(days=1)).isoformat()
    empty = assert_success(await client.request("orders.stats", {**base, "date_from": tomorrow}))
    assert empty["total_orders"] == 0
    assert_json_number(empty["total_revenue"], 0)
    assert set(empty["status_breakdown"]) == set(STATUSES)
    assert all(count == 0 for count in empty["status_breakdown"].values())

    today = placed.day.isoformat()
    same_day = assert_success(
        await client.request("orders.stats", {**base, "date_from": today, "date_to": today})
    )
    assert same_day["total_orders"] == len(PLAN)


async def test_search_by_phone_is_literal(client: AmqpClient) -> None:
    customer_id = new_customer_id()
    body = simple_order(customer_id)
    body["billing"] = {**body["billing"], "phone": "+31612345678"}
    with_phone = await place(client, body)
    await place(client, simple_order(customer_id))
    for search in ("+3161", "612345", "+31612345678"):
        listed = await list_orders(client, customer_id=customer_id, search=search)
        assert [row["id"] for row in listed["data"]] == [with_phone["id"]], search


async def test_stats_over_everything(client: AmqpClient, placed: Fixture) -> None:
    stats = assert_success(await client.request("orders.stats", {}))
    assert stats["total_orders"] >= len(PLAN)
    assert stats["total_orders"] == sum(stats["status_breakdown"].values())
    assert set(stats["status_breakdown"]) == set(STATUSES)
    assert stats["active_orders"] == sum(
        stats["status_breakdown"][s]
        for s in STATUSES
        if s not in {"completed", "cancelled", "refunded"}
    )
    top = stats["top_customers"]
    assert 1 <= len(top) <= 10
    revenues = [Decimal(row["revenue"]) for row in top]
    assert revenues == sorted(revenues, reverse=True)
    assert stats["unique_customers"] >= stats["repeat_customers"] >= 1
    day_revenue = sum((Decimal(row["revenue"]) for row in stats["revenue_by_day"]), Decimal(0))
    assert day_revenue == Decimal(stats["total_revenue"])


async def test_stats_average_is_rounded_to_two_decimals(client: AmqpClient) -> None:
    customer_id = new_customer_id()
    for price in ("10.00", "10.00", "10.01"):
        await place(client, simple_order(customer_id, price=price))
    stats = assert_success(await client.request("orders.stats", {"customer_id": customer_id}))
    assert_json_number(stats["total_revenue"], Decimal("30.01"))
    # 30.01 / 3 = 10.00333...
    assert_json_number(stats["average_order_value"], Decimal("10.00"))
