"""Searching by the search texts finds exactly what the regular expression over `search_text`
finds, for any text; the texts of orders stored before them come from the backfill, and
until it has completed a search still finds every order."""

# ruff: noqa: RUF001 - look-alike letters are what this test is about

from __future__ import annotations

import asyncio
import random
import string
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError
from pymongo.asynchronous.database import AsyncDatabase

from schemas.queries import ListOrders
from service.application.delivery import Delivery
from service.application.usecases import OrderService
from service.store.client import ORDERS, SEARCH_TEXTS, Document
from service.store.orders import OrderStore
from service.store.queries import OrderQueries, order_filter
from service.store.search import (
    BACKFILL,
    KEY_LENGTH,
    MIGRATIONS,
    KnownTexts,
    backfill_search_texts,
    remember_texts,
    search_clause,
    search_keys,
    texts_ready,
)
from service.store.stats import OrderStats
from tests.integration.builders import CURSORS, place_order

# customer, first name, last name, email, phone
PEOPLE = [
    ("CUST-1001", "John", "Doe", "john.doe@example.com", "+31612345678"),
    ("CUST-1002", "Anna", "Ackermann", "anna.ackermann12@mail.example", "+31 6 1234 5678"),
    ("cust-1003", "Zoë", "van den Berg", "zoe+orders@post.example", None),
    ("C-\u00df-4", "Jürgen", "Straße", "JUERGEN.STRASSE@WEB.EXAMPLE", "0049-30-123456"),
    ("İlker", "İlker", "Yılmaz", "ilker@example.com", "(+90) 212 555 0101"),
    ("ΣΟΦΙΑΣ", "Σοφία", "Παπαδοπούλου", "sofia@example.gr", "+30 210 1234567"),
    ("cust/5", "Seán", "O'Brien", "sean.o'brien@example.ie", "+353 1 234 5678"),
    ("山田-6", "太郎", "山田", "taro@example.jp", "+81-3-1234-5678"),
    ("cust 7", "Ann-Marie", "de la Cruz", "a.b@example.org", "+1 (555) 010-9999"),
    ("CUST_8", "😀 Smiley", "Face 😀", "smile@example.com", "+31612345678"),
    ("cust.9", "x", "y", "x@y.z", "1"),
    ("1234567890123", "Max", "Mustermann-Ackermann", "max@ackermann.example", "123456789"),
]


def _clock() -> Iterator[datetime]:
    start = datetime(2025, 11, 1, tzinfo=UTC)
    minute = 0
    while True:
        minute += 1
        yield start + timedelta(minutes=minute)


async def _place_people(db: AsyncDatabase[Document]) -> list[int]:
    times = _clock()
    orders = OrderService(
        OrderStore(db), OrderQueries(db, cursors=CURSORS), OrderStats(db),
        default_currency="EUR", clock=lambda: next(times),
    )  # fmt: skip
    ids = []
    for _ in range(2):  # two orders each, so pages and totals have ties to break
        for customer, first, last, email, phone in PEOPLE:
            billing = {"first_name": first, "last_name": last, "email": email, "phone": phone}
            command = place_order(customer, billing=billing)
            ids.append((await orders.place(command, Delivery())).order.id)
    return ids


def _texts() -> list[str]:
    """The searchable fields as given (before lower-casing), one per line as stored."""
    return [
        "\n".join((c, f"{first} {last}", email, phone or ""))
        for c, first, last, email, phone in PEOPLE
    ]


def _queries(ids: list[int], count: int) -> list[str]:
    """Substrings of the fields in any case, texts of random characters, and edge cases."""
    rng = random.Random(20261206)
    texts = _texts()
    alphabet = string.ascii_letters + string.digits + " .@+-'()_/\n\x00ßİıΣσςüë山田😀"
    queries = [
        "ckerm", "CKERM", "ackermann", "ACKERMANN12", "mustermann-ackermann", "doe", "DOE@",
        "@example", ".com", "+316", "+31 6", "6 1234", "0101", "(", ")", ".", " ", "-", "'",
        "\n", "doe\njohn", "cust-1001\njohn", "5678", "12345678", "123456789", "1234567890123",
        "1", "2", "13", str(ids[0]), str(ids[-1]), "straße", "STRASSE", "strasse", "ß", "SS",
        "i̇lker", "İLKER", "ılmaz", "ΣΟΦΙΑΣ", "σοφιας", "σοφιασ", "ς", "Σ", "山田", "😀",
        "😀 smiley", "face 😀", "\x00", "a\x00b", "x@y.z", "x", "y", "z", "zz", "zoë", "zoe+",
        "van den berg", "an den be", "ann-marie de", "de la cruz", "a.b@", "a.b", "axb",
        "abcdefghijklmnopqrstuvwxyz", "ackermann@", "ackermann.example",
    ]  # fmt: skip
    while len(queries) < count:
        if rng.random() < 0.75:
            text = rng.choice(texts)
            start = rng.randrange(len(text))
            query = text[start : start + rng.randint(1, 2 * KEY_LENGTH + 2)]
            query = rng.choice((str, str.upper, str.lower, str.swapcase, str.title))(query)
        else:
            query = "".join(rng.choices(alphabet, k=rng.randint(1, 12)))
        queries.append(query)
    return queries


def _valid(text: str) -> str | None:
    try:
        return ListOrders(search=text).search
    except ValidationError:
        return None


async def _matching(db: AsyncDatabase[Document], text: str, *, keyed: bool) -> set[int]:
    search = await search_clause(db, text) if keyed else None
    where = order_filter(ListOrders(search=text), search=search)
    return {doc["_id"] async for doc in db[ORDERS].find(where, {"_id": 1})}


async def test_the_keys_find_what_the_regular_expression_finds(db: AsyncDatabase[Document]) -> None:
    ids = await _place_people(db)
    await _texts_are_right(db)  # placing stored each order's text
    seen: set[int] = set()
    found = 0
    for query in _queries(ids, 1500):
        text = _valid(query)
        if text is None:
            continue
        expected = await _matching(db, text, keyed=False)
        assert await _matching(db, text, keyed=True) == expected, repr(text)
        seen |= expected
        found += bool(expected)
    assert seen == set(ids)  # every order was found by some query
    assert found > 700  # most queries found something: the comparison is not vacuous


async def test_pages_and_totals_are_those_of_the_regular_expression(
    db: AsyncDatabase[Document],
) -> None:
    ids = await _place_people(db)
    await db[MIGRATIONS].delete_many({})
    before = OrderQueries(db, cursors=CURSORS)  # the keys are not ready: regular expression
    queries = [q for q in map(_valid, _queries(ids, 150)) if q is not None]
    expected = []
    for text in queries:
        for extra in ({}, {"per_page": 2}, {"per_page": 3, "page": 2}, {"order_by": "total"}):
            query = ListOrders.model_validate({"search": text, **extra})
            expected.append((query, await before.page(query)))
    assert not await texts_ready(db)

    assert await backfill_search_texts(db) == 0  # every order's text is there already
    assert await texts_ready(db)
    keyed = OrderQueries(db, cursors=CURSORS)
    for query, page in expected:
        assert await keyed.page(query) == page, query


async def test_a_search_reads_ranges_of_indexes_only(db: AsyncDatabase[Document]) -> None:
    await _place_people(db)
    await backfill_search_texts(db)
    texts = await db.command(
        "explain",
        {"find": SEARCH_TEXTS, "filter": {"keys": {"$regex": "^ckerm"}}},
        verbosity="executionStats",
    )
    assert "'indexName': 'keys'" in str(texts["queryPlanner"]["winningPlan"])
    assert texts["executionStats"]["nReturned"] == 2  # Anna's text, Max's text
    clause = await search_clause(db, "CKERM")
    assert len(clause["search_text"]["$in"]) == 2
    where = order_filter(ListOrders(search="CKERM"), search=clause)
    plan = await db.command(
        "explain", {"count": ORDERS, "query": where}, verbosity="executionStats"
    )
    assert plan["executionStats"]["totalDocsExamined"] == 0  # counted from the index
    assert "search_text" in str(plan["queryPlanner"]["winningPlan"])
    assert await db[ORDERS].count_documents(where) == 4
    longer = await search_clause(db, "Ackermann12@")  # the regular expression decides
    assert len(longer["search_text"]["$in"]) == 1
    assert await search_clause(db, "@.") == {"search_text": {"$regex": "@\\."}}


async def _forgotten(db: AsyncDatabase[Document], texts: list[str] | None = None) -> None:
    """As an earlier version stored the orders: no search texts."""
    await db[SEARCH_TEXTS].delete_many({} if texts is None else {"_id": {"$in": texts}})


async def _texts_are_right(db: AsyncDatabase[Document]) -> None:
    stored = {doc["_id"]: doc["keys"] async for doc in db[SEARCH_TEXTS].find({})}
    assert all(keys == search_keys(text) for text, keys in stored.items())
    assert set(stored) == set(await db[ORDERS].distinct("search_text"))


async def test_the_texts_of_orders_stored_before_them_are_collected(
    db: AsyncDatabase[Document],
) -> None:
    ids = await _place_people(db)
    await _forgotten(db)
    await db[MIGRATIONS].delete_many({})
    queries = OrderQueries(db, cursors=CURSORS)
    page = await queries.page(ListOrders(search="ACKERMANN"))
    assert page.total == 4  # found by the regular expression meanwhile

    assert await backfill_search_texts(db, batch=5) == len(PEOPLE)
    await _texts_are_right(db)
    marker = await db[MIGRATIONS].find_one({"_id": BACKFILL})
    assert marker is not None
    assert (marker["done"], marker["after"]) == (True, max(ids))
    assert await queries.search_texts_ready()
    assert (await queries.page(ListOrders(search="ACKERMANN"))).total == 4
    assert await backfill_search_texts(db) == 0  # nothing twice

    # an order an earlier version stored after the pass (a rolling upgrade): the next
    # start-up's pass collects its text
    order = await db[ORDERS].find_one({"_id": ids[3]})
    assert order is not None
    await _forgotten(db, [order["search_text"]])
    assert await backfill_search_texts(db) == 1
    await _texts_are_right(db)


async def test_backfills_and_placements_of_several_processes_at_once(
    db: AsyncDatabase[Document],
) -> None:
    await _place_people(db)
    await _forgotten(db)
    await db[MIGRATIONS].delete_many({})
    await asyncio.gather(*(backfill_search_texts(db, batch=3) for _ in range(3)))
    await _texts_are_right(db)
    assert await texts_ready(db)
    # one new text placed by several processes at once is stored once, without an error
    await asyncio.gather(*(remember_texts(db, ["new\ntext"]) for _ in range(8)))
    assert await db[SEARCH_TEXTS].count_documents({"_id": "new\ntext"}) == 1


async def test_a_known_text_costs_no_command(db: AsyncDatabase[Document]) -> None:
    known = KnownTexts(size=2)
    await known.remember(db, ["a", "b"])
    await db[SEARCH_TEXTS].delete_many({})  # (texts are never removed: this shows no write)
    await known.remember(db, ["a", "b"])
    assert await db[SEARCH_TEXTS].count_documents({}) == 0
    await known.remember(db, ["a", "c"])  # writes "c"; over its size, it forgets the rest
    assert await db[SEARCH_TEXTS].distinct("_id") == ["c"]
    await known.remember(db, ["a", "c"])
    assert await db[SEARCH_TEXTS].distinct("_id") == ["a", "c"]


@pytest.mark.parametrize(
    ("text", "keys"),
    [
        ("ab", ["ab", "b"]),
        ("a-b\nc", ["a-b\nc", "b\nc", "c"]),
        ("0123456789", ["01234567", "12345678", "23456789", "3456789", "456789", "56789",
                        "6789", "789", "89", "9"]),
        ("..", []),
    ],
)  # fmt: skip
def test_the_keys_of_a_text(text: str, keys: list[Any]) -> None:
    assert search_keys(text) == keys
