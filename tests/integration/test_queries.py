"""The list query and the stats pipeline on a known data set, with hand-computed expectations."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from pydantic import SecretStr
from pymongo.asynchronous.database import AsyncDatabase

from schemas.queries import ListOrders, OrderStatsQuery
from service.application.delivery import Delivery
from service.application.usecases import OrderService
from service.domain.errors import ValidationFailed
from service.domain.idempotency import RequestKey
from service.store.client import Document, ensure_indexes
from service.store.cursors import CursorCodec, cursor_key
from service.store.documents import placement_query
from service.store.orders import OrderStore
from service.store.queries import OrderQueries
from service.store.search import backfill_search_texts
from service.store.stats import OrderStats, stats_pipeline
from tests.integration.builders import CURSORS, place_order

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
async def known(db: AsyncDatabase[Document]) -> list[dict[str, Any]]:
    times = _clock([row[3] for row in DATA_SET])
    orders = OrderService(
        OrderStore(db), OrderQueries(db, cursors=CURSORS), OrderStats(db),
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
    page = await OrderQueries(db, cursors=CURSORS).page(ListOrders.model_validate(query))
    return [order.id for order in page.orders]


async def test_list_filters(db: AsyncDatabase[Document], known: list[dict[str, Any]]) -> None:
    assert await _ids(db, customer_id="alice", order_by="id", order_direction="asc") == [1, 2]
    assert await _ids(db, status=["cancelled", "refunded"], order_by="id") == [6, 3]
    assert await _ids(db, status="pending") == [1]
    assert await _ids(db, active_only=True, order_by="id", order_direction="asc") == [1, 4, 5]
    assert await _ids(db, date_from="2025-11-02", date_to="2025-11-03") == [5, 4, 3]
    assert await _ids(db, date_to="2025-11-01") == [2, 1]
    assert await _ids(db, order_by="total", order_direction="asc") == [4, 6, 3, 1, 2, 5]


@pytest.mark.parametrize("keys", [False, True], ids=["regex", "search-texts"])
async def test_search_is_literal_and_case_insensitive(
    db: AsyncDatabase[Document], known: list[dict[str, Any]], keys: bool
) -> None:
    if keys:
        await backfill_search_texts(db)  # the texts are ready: searches read them
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
    queries = OrderQueries(db, cursors=CURSORS)
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
    queries = OrderQueries(db, cursors=CURSORS)
    base = {"order_by": order_by, "order_direction": direction, "per_page": 4}
    by_pages = [
        o.id
        for number in (1, 2)
        for o in (await queries.page(ListOrders.model_validate(base | {"page": number}))).orders
    ]
    assert sorted(by_pages) == [1, 2, 3, 4, 5, 6]
    for per_page in (1, 4, 5):
        walked, cursor = [], ""
        while True:
            query = ListOrders.model_validate(base | {"per_page": per_page, "cursor": cursor})
            page = await queries.page(query)
            walked += [o.id for o in page.orders]
            assert page.total == 6
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert walked == by_pages, f"per_page={per_page}"


async def test_the_cursor_key_is_shared_through_the_database(
    db: AsyncDatabase[Document], known: list[dict[str, Any]]
) -> None:
    """Two processes on one database (a worker and a gateway) sign with the same key, and
    accept each other's cursors; a configured key replaces it."""
    first, second = await cursor_key(db, None), await cursor_key(db, None)
    assert first == second
    assert len(first) == 32
    configured = SecretStr("c" * 32)
    assert await cursor_key(db, configured) == b"c" * 32
    worker = OrderQueries(db, cursors=CursorCodec(first))
    gateway = OrderQueries(db, cursors=CursorCodec(second))
    query = ListOrders(order_by="total", per_page=4, cursor="")
    issued = (await worker.page(query)).next_cursor
    assert issued is not None
    rest = await gateway.page(query.model_copy(update={"cursor": issued}))
    assert [o.id for o in rest.orders] == [6, 4]  # 40.00 and 19.99 (by total, descending)
    other = OrderQueries(db, cursors=CursorCodec(b"c" * 32))
    with pytest.raises(ValidationFailed):
        await other.page(query.model_copy(update={"cursor": issued}))


async def test_a_cursor_only_works_with_its_own_query(
    db: AsyncDatabase[Document], known: list[dict[str, Any]]
) -> None:
    queries = OrderQueries(db, cursors=CURSORS)
    first = await queries.page(ListOrders(per_page=2))
    assert first.next_cursor is not None
    with pytest.raises(ValidationFailed):
        await queries.page(ListOrders(per_page=2, customer_id="alice", cursor=first.next_cursor))
    with pytest.raises(ValidationFailed):
        await queries.page(ListOrders(per_page=2, cursor="bm90IGEgY3Vyc29y"))
    # The unsigned format of before, with a total that BSON's Decimal128 cannot hold.
    forged = "WyJhci02RGdibEpOUjEiLCIxZTk5OTkiLDFd"
    with pytest.raises(ValidationFailed):
        await queries.page(ListOrders(order_by="total", cursor=forged))


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


async def test_idempotency_lookups_use_their_partial_indexes(db: AsyncDatabase[Document]) -> None:
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
    page = await OrderQueries(db, cursors=CURSORS).page(ListOrders(search=text))
    assert (page.orders, page.total) == ([], 0)
