"""The list query and the stats pipeline on a known data set, with hand-computed expectations."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from schemas.queries import ListOrders, OrderStatsQuery
from service.domain.errors import ValidationFailed
from service.domain.idempotency import RequestKey
from service.placing import Delivery
from service.store.client import Document, ensure_indexes
from service.store.documents import placement_query
from service.store.orders import OrderStore
from service.store.outbox import OutboxRelay
from service.store.queries import OrderQueries
from service.store.stats import OrderStats, stats_pipeline
from service.usecases import OrderService
from tests.integration.builders import place_order

# customer, total, status, day of November 2025, currency, first name, last name, email
DATA_SET = [
    ("alice", "100.00", "pending", 1, "EUR", "Alice", "Smith", "alice@example.com"),
    ("alice", "250.50", "completed", 1, "EUR", "Alice", "Smith", "alice@example.com"),
    ("bob", "80.00", "cancelled", 2, "EUR", "Bob", "Jones", "bob@example.org"),
    ("bob", "19.99", "in_progress", 3, "EUR", "Bob", "Jones", "a.b@example.org"),
    ("carol", "500.00", "confirmed", 3, "USD", "Carol", "King", "carol@example.net"),
    ("dave", "40.00", "refunded", 4, "EUR", "Dave", "Axb", "axb@example.com"),
]


def _clock(days: list[int]) -> Iterator[datetime]:
    for minute, day in enumerate(days):
        yield datetime(2025, 11, day, 12, minute, tzinfo=UTC)


@pytest.fixture
async def known(db: AsyncDatabase[Document], relay: OutboxRelay) -> list[dict[str, Any]]:
    times = _clock([row[3] for row in DATA_SET])
    orders = OrderService(
        OrderStore(db), OrderQueries(db), OrderStats(db), relay,
        default_currency="EUR", clock=lambda: next(times),
    )  # fmt: skip
    placed = []
    for customer, total, status, _, currency, first, last, email in DATA_SET:
        command = place_order(
            customer,
            items=[{"product_id": "sku", "product_name": "Thing", "quantity": 1, "price": total}],
            billing={"first_name": first, "last_name": last, "email": email},
            status=status,
            currency=currency,
        )
        order = (await orders.place(command, Delivery())).order
        placed.append({"id": order.id, "order_id": order.order_id, "customer": customer})
    return placed


async def _ids(db: AsyncDatabase[Document], **query: Any) -> list[int]:
    page = await OrderQueries(db).page(ListOrders.model_validate(query))
    return [order.id for order in page.orders]


async def test_list_filters(db: AsyncDatabase[Document], known: list[dict[str, Any]]) -> None:
    assert await _ids(db, customer_id="alice", order_by="id", order_direction="asc") == [1, 2]
    assert await _ids(db, status=["cancelled", "refunded"], order_by="id") == [6, 3]
    assert await _ids(db, status="pending") == [1]
    assert await _ids(db, active_only=True, order_by="id", order_direction="asc") == [1, 4, 5]
    assert await _ids(db, date_from="2025-11-02", date_to="2025-11-03") == [5, 4, 3]
    assert await _ids(db, date_to="2025-11-01") == [2, 1]
    assert await _ids(db, order_by="total", order_direction="asc") == [4, 6, 3, 1, 2, 5]


async def test_search_is_literal_and_case_insensitive(
    db: AsyncDatabase[Document], known: list[dict[str, Any]]
) -> None:
    assert await _ids(db, search="SMITH") == [2, 1]
    assert await _ids(db, search="example.NET") == [5]
    assert await _ids(db, search="a.b") == [4]  # not axb: the dot is not a wildcard
    assert await _ids(db, search=".*") == []
    assert await _ids(db, search="(") == []
    assert await _ids(db, search=str(known[2]["order_id"])) == [3]
    assert await _ids(db, search="5") == [5]  # a number matches the database id exactly


async def test_paging_reports_totals_and_last_page(
    db: AsyncDatabase[Document], known: list[dict[str, Any]]
) -> None:
    queries = OrderQueries(db)
    page = await queries.page(ListOrders(per_page=4, page=2, order_by="id"))
    assert [o.id for o in page.orders] == [2, 1]
    assert (page.total, page.last_page, page.next_cursor) == (6, 2, None)
    empty = await queries.page(ListOrders(customer_id="nobody"))
    assert (empty.orders, empty.total, empty.last_page) == ([], 0, 1)


@pytest.mark.parametrize(
    ("order_by", "direction"),
    [("created_at", "desc"), ("total", "asc"), ("id", "desc"), ("customer_id", "asc"),
     ("status", "desc"), ("updated_at", "asc"), ("order_id", "desc")],
)  # fmt: skip
async def test_cursor_walks_the_same_orders_as_the_pages(
    db: AsyncDatabase[Document], known: list[dict[str, Any]], order_by: str, direction: str
) -> None:
    queries = OrderQueries(db)
    base = {"order_by": order_by, "order_direction": direction, "per_page": 4}
    by_pages = [
        o.id
        for number in (1, 2)
        for o in (await queries.page(ListOrders.model_validate(base | {"page": number}))).orders
    ]
    first = await queries.page(ListOrders.model_validate(base | {"cursor": ""}))
    assert first.next_cursor is not None
    second = await queries.page(ListOrders.model_validate(base | {"cursor": first.next_cursor}))
    assert [o.id for o in first.orders + second.orders] == by_pages
    assert second.next_cursor is None
    assert second.total == 6


async def test_a_cursor_only_works_with_its_own_query(
    db: AsyncDatabase[Document], known: list[dict[str, Any]]
) -> None:
    queries = OrderQueries(db)
    first = await queries.page(ListOrders(per_page=2))
    assert first.next_cursor is not None
    with pytest.raises(ValidationFailed):
        await queries.page(ListOrders(per_page=2, customer_id="alice", cursor=first.next_cursor))
    with pytest.raises(ValidationFailed):
        await queries.page(ListOrders(per_page=2, cursor="bm90IGEgY3Vyc29y"))


async def test_stats_over_everything(
    db: AsyncDatabase[Document], known: list[dict[str, Any]]
) -> None:
    stats = await OrderStats(db).compute(OrderStatsQuery(), "EUR")

    assert stats["total_orders"] == 6
    assert stats["total_revenue"] == Decimal("370.49")  # 100.00 + 250.50 + 19.99 (EUR, kept)
    assert stats["average_order_value"] == Decimal("123.50")  # 370.49 / 3, half up
    assert stats["active_orders"] == 3
    assert stats["status_breakdown"] == {
        "pending": 1, "processing": 0, "confirmed": 1, "in_progress": 1,
        "completed": 1, "cancelled": 1, "refunded": 1, "on_hold": 0,
    }  # fmt: skip
    assert stats["pending_orders"] == 1
    assert stats["on_hold_orders"] == 0
    assert stats["revenue_by_currency"] == {"EUR": Decimal("370.49"), "USD": Decimal("500.00")}
    assert stats["revenue_by_day"] == [
        {"date": "2025-11-01", "orders": 2, "revenue": Decimal("350.50")},
        {"date": "2025-11-02", "orders": 1, "revenue": Decimal("0.00")},
        {"date": "2025-11-03", "orders": 2, "revenue": Decimal("19.99")},
        {"date": "2025-11-04", "orders": 1, "revenue": Decimal("0.00")},
    ]
    assert stats["top_customers"] == [
        {"customer_id": "alice", "orders": 2, "revenue": Decimal("350.50")},
        {"customer_id": "bob", "orders": 2, "revenue": Decimal("19.99")},
        {"customer_id": "carol", "orders": 1, "revenue": Decimal("0.00")},
        {"customer_id": "dave", "orders": 1, "revenue": Decimal("0.00")},
    ]
    assert (stats["unique_customers"], stats["repeat_customers"]) == (4, 2)


async def test_stats_honour_the_list_filters(
    db: AsyncDatabase[Document], known: list[dict[str, Any]]
) -> None:
    alice = await OrderStats(db).compute(OrderStatsQuery(customer_id="alice"), "EUR")
    assert (alice["total_orders"], alice["total_revenue"]) == (2, Decimal("350.50"))
    assert alice["average_order_value"] == Decimal("175.25")

    window = await OrderStats(db).compute(
        OrderStatsQuery.model_validate({"date_from": "2025-11-02", "date_to": "2025-11-03"}), "EUR"
    )
    assert (window["total_orders"], window["total_revenue"]) == (3, Decimal("19.99"))

    nothing = await OrderStats(db).compute(OrderStatsQuery(customer_id="nobody"), "EUR")
    assert nothing["total_orders"] == 0
    assert nothing["total_revenue"] == Decimal("0.00")
    assert nothing["average_order_value"] == Decimal("0.00")
    assert nothing["top_customers"] == []
    assert set(nothing["status_breakdown"].values()) == {0}


async def test_indexes_serve_the_common_filters(db: AsyncDatabase[Document]) -> None:
    plan = await db["orders"].find({"customer_id": "alice"}).sort("created_at", -1).explain()
    assert "customer_created" in str(plan["queryPlanner"]["winningPlan"])
    plan = (
        await db["orders"].find({"status": {"$in": ["pending"]}}).sort("created_at", -1).explain()
    )
    assert "status_created" in str(plan["queryPlanner"]["winningPlan"])


async def test_stats_by_customer_read_the_index_alone(
    db: AsyncDatabase[Document], known: list[dict[str, Any]]
) -> None:
    pipeline = stats_pipeline(OrderStatsQuery(customer_id="alice"), "EUR")
    plan = await db.command(
        "explain",
        {"aggregate": "orders", "pipeline": pipeline, "cursor": {}},
        verbosity="executionStats",
    )
    text = str(plan)
    assert "customer_created_id_stats" in text
    assert "'totalDocsExamined': 0" in text
    assert "'totalKeysExamined': 0" not in text


async def test_idempotency_lookups_use_their_partial_indexes(
    db: AsyncDatabase[Document], relay: OutboxRelay
) -> None:
    keys = [RequestKey("a"), RequestKey("m-1", from_message=True)]
    plan = await db["orders"].find(placement_query(keys)).explain()  # as the store asks
    winning = str(plan["queryPlanner"]["winningPlan"])
    assert "idempotency_key_unique" in winning
    assert "message_id_unique" in winning
    assert "COLLSCAN" not in winning


async def test_an_index_an_earlier_version_made_is_replaced(db: AsyncDatabase[Document]) -> None:
    await db["orders"].drop_index("customer_created_id_stats")
    await db["orders"].create_index(
        [("customer_id", 1), ("created_at", -1), ("_id", -1)], name="customer_created_id"
    )
    await ensure_indexes(db)
    names = {index["name"] async for index in await db["orders"].list_indexes()}
    assert "customer_created_id_stats" in names
    assert "customer_created_id" not in names


@pytest.mark.parametrize("text", ["\x00", "a\x00b", "\x00\u00da\x13"])
async def test_a_search_with_a_nul_character_is_answered(
    db: AsyncDatabase[Document], known: list[dict[str, Any]], text: str
) -> None:
    # mongod refuses a regular expression with an embedded NUL byte: it must be escaped
    page = await OrderQueries(db).page(ListOrders(search=text))
    assert (page.orders, page.total) == ([], 0)
