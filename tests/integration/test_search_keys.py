"""Searching by the search keys finds exactly what the regular expression over `search_text`
finds, for any text; orders stored without keys get them from the backfill, and until it
has completed a search still finds them."""

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
from service.store.client import ORDERS, Document
from service.store.orders import OrderStore
from service.store.outbox import OutboxRelay
from service.store.queries import OrderQueries, order_filter
from service.store.search import (
    BACKFILL,
    KEY_LENGTH,
    MIGRATIONS,
    SEARCH_KEYS,
    backfill_search_keys,
    keys_ready,
    search_keys,
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


async def _place_people(db: AsyncDatabase[Document], relay: OutboxRelay) -> list[int]:
    times = _clock()
    orders = OrderService(
        OrderStore(db), OrderQueries(db, cursors=CURSORS), OrderStats(db), relay,
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
    where = order_filter(ListOrders(search=text), search_keys=keyed)
    return {doc["_id"] async for doc in db[ORDERS].find(where, {"_id": 1})}


async def test_the_keys_find_what_the_regular_expression_finds(
    db: AsyncDatabase[Document], relay: OutboxRelay
) -> None:
    ids = await _place_people(db, relay)
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
    db: AsyncDatabase[Document], relay: OutboxRelay
) -> None:
    ids = await _place_people(db, relay)
    await db[MIGRATIONS].delete_many({})
    before = OrderQueries(db, cursors=CURSORS)  # the keys are not ready: regular expression
    queries = [q for q in map(_valid, _queries(ids, 150)) if q is not None]
    expected = []
    for text in queries:
        for extra in ({}, {"per_page": 2}, {"per_page": 3, "page": 2}, {"order_by": "total"}):
            query = ListOrders.model_validate({"search": text, **extra})
            expected.append((query, await before.page(query)))
    assert not await keys_ready(db)

    assert await backfill_search_keys(db) == 0  # every order has its keys already
    assert await keys_ready(db)
    keyed = OrderQueries(db, cursors=CURSORS)
    for query, page in expected:
        assert await keyed.page(query) == page, query


async def test_a_search_reads_a_range_of_the_keys(
    db: AsyncDatabase[Document], relay: OutboxRelay
) -> None:
    await _place_people(db, relay)
    await backfill_search_keys(db)
    exact = order_filter(ListOrders(search="CKERM"), search_keys=True)
    plan = await db.command(
        "explain",
        {"count": ORDERS, "query": exact},
        verbosity="executionStats",
    )
    stats = plan["executionStats"]
    assert stats["totalDocsExamined"] == 0  # the index range decides alone
    assert "search_keys" in str(plan["queryPlanner"]["winningPlan"])
    longer = order_filter(ListOrders(search="Ackermann12@"), search_keys=True)
    plan = await db.command(
        "explain", {"count": ORDERS, "query": longer}, verbosity="executionStats"
    )
    assert "search_keys" in str(plan["queryPlanner"]["winningPlan"])
    # only the orders with a key "ackerman" are read (Anna's and Max's, two each)
    assert plan["executionStats"]["totalDocsExamined"] == 4
    assert await db[ORDERS].count_documents(longer) == 2


async def _unkeyed(db: AsyncDatabase[Document], ids: list[int] | None = None) -> None:
    """As an earlier version stored them: no keys."""
    where: Document = {} if ids is None else {"_id": {"$in": ids}}
    await db[ORDERS].update_many(where, {"$unset": {SEARCH_KEYS: ""}})


async def _keys_are_right(db: AsyncDatabase[Document]) -> None:
    async for doc in db[ORDERS].find({}, {"search_text": 1, SEARCH_KEYS: 1}):
        assert doc[SEARCH_KEYS] == search_keys(doc["search_text"]), doc["_id"]


async def test_orders_stored_without_keys_get_them_and_are_found_meanwhile(
    db: AsyncDatabase[Document], relay: OutboxRelay
) -> None:
    ids = await _place_people(db, relay)
    await _unkeyed(db)
    await db[MIGRATIONS].delete_many({})
    queries = OrderQueries(db, cursors=CURSORS)
    page = await queries.page(ListOrders(search="ACKERMANN"))
    assert page.total == 4  # found by the regular expression meanwhile

    assert await backfill_search_keys(db, batch=5) == len(ids)
    await _keys_are_right(db)
    marker = await db[MIGRATIONS].find_one({"_id": BACKFILL})
    assert marker is not None
    assert (marker["done"], marker["after"]) == (True, max(ids))
    assert await queries.search_keys_ready()
    assert (await queries.page(ListOrders(search="ACKERMANN"))).total == 4
    assert await backfill_search_keys(db) == 0  # nothing twice

    # an order an earlier version stored after the pass (a rolling upgrade): the next
    # start-up's pass gives it its keys
    await _unkeyed(db, [ids[3]])
    assert await backfill_search_keys(db) == 1
    await _keys_are_right(db)


async def test_backfills_of_several_processes_at_once(
    db: AsyncDatabase[Document], relay: OutboxRelay
) -> None:
    ids = await _place_people(db, relay)
    await _unkeyed(db)
    await db[MIGRATIONS].delete_many({})
    changed = await asyncio.gather(*(backfill_search_keys(db, batch=3) for _ in range(3)))
    assert sum(changed) == len(ids)  # each order written once
    await _keys_are_right(db)
    assert await keys_ready(db)


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
