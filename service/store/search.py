"""The search texts: what lets `search` (a literal, case-insensitive substring of the order's
`search_text`) read index ranges instead of every key of the `search_text` index.

Every distinct `search_text` (the lower-cased customer id, full name, email and phone: one
per customer and billing, shared by all their orders) is a document of `search_texts`,
with `_id` the text and `keys` the first `KEY_LENGTH` characters of every suffix of it that
starts with a letter or a digit (a multikey index). A text that occurs in a search text is
a prefix of one of its suffixes, so a search:

1. reads the range of its first `KEY_LENGTH` characters (from its first letter or digit on)
   in that index; a search at most `KEY_LENGTH` long that starts with a letter or digit is
   decided by the range alone, a longer one by the regular expression on those texts'
   `_id`s;
2. then reads the orders whose `search_text` is one of those texts (the `search_text`
   index: one range per text, counted from the index alone).

A text without any letter or digit, or one matching more than `MAX_TEXTS` texts, uses the
regular expression over the `search_text` index of the orders, as before.

An order's text is written before the order (`remember_texts`), so any stored order has its
text; a text whose order then failed to be stored matches no order. A process does not
write again a text it wrote or saw before (`KnownTexts`): texts are never removed. Orders
stored before the texts existed get theirs from `backfill_search_texts` (in the background
at start-up); until its first pass completed, searches use the regular expression, so they
see every order whatever the migration's progress. The keys cost index entries once per
distinct text instead of once per order (a million orders of 50,000 customers: 50,000
texts).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable

from pymongo import ASCENDING, IndexModel, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from service.store.client import ORDERS, SEARCH_TEXTS, Document

log = logging.getLogger(__name__)

KEY_LENGTH = 8
"""Characters kept of each suffix: a search up to this long is decided by the keys alone."""
TEXT_INDEXES = [IndexModel([("keys", ASCENDING)], name="keys")]
"""Built by the backfill at the end of its first pass: one bulk build of a migration's texts
is a fifth of the size of the same index grown text by text (29 against 147 MB for 54,000
texts)."""
MAX_TEXTS = 5_000
"""More texts than this matching a search: the regular expression over the orders instead
(a handful of characters found in most customers' texts reads most orders either way)."""
MIGRATIONS = "migrations"
BACKFILL = "search-texts-v1"
"""The backfill's marker in `MIGRATIONS`: `after` (the last order `_id` it has passed) and
`done` once a pass over every order completed."""
BACKFILL_BATCH = 5000
RECHECK_IDS = 10_000
"""A backfill resumes this many ids before where the last one stopped: an order whose id was
taken before that pass ended may have been stored after it (by an earlier version)."""
DUPLICATE_KEY = 11000
KNOWN_TEXTS = 10_000


def search_keys(text: str) -> list[str]:
    """The keys of a (lower-cased) search text."""
    return sorted({text[i : i + KEY_LENGTH] for i, char in enumerate(text) if char.isalnum()})


def literal(text: str) -> str:
    """A regular expression matching `text` literally. `re.escape` leaves NUL as it is, and
    mongod refuses a pattern with an embedded NUL byte, so NUL is written as `\\x00`."""
    return r"\x00".join(re.escape(part) for part in text.split("\x00"))


def text_clause(text: str) -> Document:
    """The search by regular expression over the orders' `search_text`."""
    return {"search_text": {"$regex": literal(text.lower())}}


def _texts_query(wanted: str) -> Document | None:
    """The search texts containing `wanted` (lower-cased), or None if the keys cannot narrow
    them (no letter or digit)."""
    start = next((i for i, char in enumerate(wanted) if char.isalnum()), None)
    if start is None:
        return None
    prefix = wanted[start : start + KEY_LENGTH]
    # one condition on the array: some key starts with `prefix` (one index range)
    query: Document = {"keys": {"$regex": "^" + literal(prefix)}}
    if start > 0 or len(wanted) > KEY_LENGTH:
        query["_id"] = {"$regex": literal(wanted)}
    return query


async def search_clause(db: AsyncDatabase[Document], text: str) -> Document:
    """The condition on orders whose `search_text` contains `text` (case-insensitive), once
    every order's text is in `search_texts` (`texts_ready`)."""
    query = _texts_query(text.lower())
    if query is None:
        return text_clause(text)
    cursor = db[SEARCH_TEXTS].find(query, {"_id": 1}).limit(MAX_TEXTS + 1)
    texts = [doc["_id"] async for doc in cursor]
    if len(texts) > MAX_TEXTS:
        return text_clause(text)
    return {"search_text": {"$in": texts}}


class KnownTexts:
    """The texts this process knows are in `search_texts` (texts are never removed), so
    orders of a repeat customer cost no command; at most `size`, forgotten all at once."""

    def __init__(self, size: int = KNOWN_TEXTS) -> None:
        self._size = size
        self._known: set[str] = set()

    async def remember(self, db: AsyncDatabase[Document], texts: Iterable[str]) -> None:
        """`remember_texts` for those of `texts` not known here."""
        new = set(texts) - self._known
        if not new:
            return
        await remember_texts(db, new)
        if len(self._known) + len(new) > self._size:
            self._known.clear()
        self._known |= new


async def remember_texts(db: AsyncDatabase[Document], texts: Iterable[str]) -> None:
    """Make sure each of `texts` is in `search_texts` (before the orders that have them are
    stored). A text already there is matched and left as it is: nothing is written."""
    updates = [
        UpdateOne({"_id": text}, {"$setOnInsert": {"keys": search_keys(text)}}, upsert=True)
        for text in sorted(set(texts))
    ]
    if not updates:
        return
    try:
        await db[SEARCH_TEXTS].bulk_write(updates, ordered=False)
    except BulkWriteError as exc:  # two processes inserting one new text: it is there
        if any(e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
            raise


async def texts_ready(db: AsyncDatabase[Document]) -> bool:
    """Whether every order's text is in `search_texts` (the backfill's first pass
    completed)."""
    marker = await db[MIGRATIONS].find_one({"_id": BACKFILL}, {"done": 1})
    return bool(marker and marker.get("done"))


async def backfill_search_texts(db: AsyncDatabase[Document], *, batch: int = BACKFILL_BATCH) -> int:
    """Put the texts of the stored orders into `search_texts`, in `_id` order from where the
    last pass stopped; once a pass reached the last order, make sure of the index and mark
    the texts ready. Returns how many texts it added. Orders are only read; texts are
    upserted, so passes of several processes at once only repeat each other's work."""
    marker = await db[MIGRATIONS].find_one({"_id": BACKFILL}) or {}
    after = marker.get("after")
    if after is not None and marker.get("done"):
        after -= RECHECK_IDS
    added = 0
    if not marker.get("done"):
        log.info("collecting the search texts of the stored orders")
    while True:
        where = {} if after is None else {"_id": {"$gt": after}}
        docs = (
            await db[ORDERS].find(where, {"search_text": 1}).sort("_id", 1).limit(batch).to_list()
        )
        if not docs:
            break
        texts = {doc["search_text"] for doc in docs if isinstance(doc.get("search_text"), str)}
        known = {
            doc["_id"]
            async for doc in db[SEARCH_TEXTS].find({"_id": {"$in": sorted(texts)}}, {"_id": 1})
        }
        await remember_texts(db, texts - known)
        added += len(texts - known)
        after = docs[-1]["_id"]
        await db[MIGRATIONS].update_one({"_id": BACKFILL}, {"$max": {"after": after}}, upsert=True)
        if len(docs) < batch:
            break
    await db[SEARCH_TEXTS].create_indexes(TEXT_INDEXES)
    await db[MIGRATIONS].update_one({"_id": BACKFILL}, {"$set": {"done": True}}, upsert=True)
    if not marker.get("done"):
        log.info("%d search texts collected and indexed", added)
    return added


async def run_backfill(db: AsyncDatabase[Document], *, retry_seconds: float = 5.0) -> None:
    """`backfill_search_texts` in the background at start-up, retried until one pass
    completes (outages are waited out)."""
    while True:
        try:
            await backfill_search_texts(db)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("collecting the search texts failed; retrying", exc_info=True)
            await asyncio.sleep(retry_seconds)
        else:
            return
