"""The search keys: what lets `search` (a literal, case-insensitive substring of the order's
`search_text`) read an index range instead of every key of the `search_text` index.

An order keeps, in `search_keys`, the first `KEY_LENGTH` characters of every suffix of its
`search_text` that starts with a letter or a digit (one multikey index over them; about
sixty keys for a typical order, no other document). A text that occurs in `search_text` is
a prefix of one of its suffixes, so:

- a search whose text starts with a letter or digit and is at most `KEY_LENGTH` long
  matches exactly the orders with a key in the range of that prefix (no regular
  expression, no document read to decide);
- a longer one, or one starting with other characters, reads the range of its first
  `KEY_LENGTH` characters from the first letter or digit on, and the regular expression
  decides among those orders;
- a text without any letter or digit uses the regular expression over the `search_text`
  index, as before the keys existed.

Orders stored before the keys existed get them from `backfill_search_keys` (in the
background at start-up), which then builds the index; until its first pass is complete,
searches use the regular expression, so they see every order whatever the migration's
progress.
"""

from __future__ import annotations

import asyncio
import logging
import re

from pymongo import ASCENDING, IndexModel, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from service.store.client import ORDERS, Document

log = logging.getLogger(__name__)

SEARCH_KEYS = "search_keys"
SEARCH_INDEX = IndexModel([(SEARCH_KEYS, ASCENDING)], name=SEARCH_KEYS)
"""Made by the backfill once every order has its keys: one bulk build of the keys sorted
costs far less than adding them to the index order by order."""
KEY_LENGTH = 8
"""Characters kept of each suffix: a search up to this long is answered by the keys alone."""
MIGRATIONS = "migrations"
BACKFILL = "search-keys-v1"
"""The backfill's marker in `MIGRATIONS`: `after` (the last order `_id` it has passed) and
`done` once a pass over every order completed."""
BACKFILL_BATCH = 1000
RECHECK_IDS = 10_000
"""A backfill resumes this many ids before where the last one stopped: an order whose id was
taken before that pass ended may have been stored after it (by an earlier version)."""


def search_keys(text: str) -> list[str]:
    """The keys of a stored (lower-cased) `search_text`."""
    return sorted({text[i : i + KEY_LENGTH] for i, char in enumerate(text) if char.isalnum()})


def literal(text: str) -> str:
    """A regular expression matching `text` literally. `re.escape` leaves NUL as it is, and
    mongod refuses a pattern with an embedded NUL byte, so NUL is written as `\\x00`."""
    return r"\x00".join(re.escape(part) for part in text.split("\x00"))


def narrows(text: str) -> bool:
    """Whether the keys narrow a search of `text` (it has a letter or digit)."""
    return any(char.isalnum() for char in text.lower())


def search_clause(text: str, *, keys_ready: bool) -> Document:
    """The condition for orders whose `search_text` contains `text` (case-insensitive)."""
    wanted = text.lower()
    regex = {"search_text": {"$regex": literal(wanted)}}
    start = next((i for i, char in enumerate(wanted) if char.isalnum()), None)
    if not keys_ready or start is None:
        return regex
    prefix = wanted[start : start + KEY_LENGTH]
    # one condition on the array: some key starts with `prefix` (an index range)
    keys = {SEARCH_KEYS: {"$regex": "^" + literal(prefix)}}
    if start == 0 and len(wanted) <= KEY_LENGTH:
        return keys  # the range is exactly the orders containing `wanted`
    return keys | regex


async def keys_ready(db: AsyncDatabase[Document]) -> bool:
    """Whether every order has its search keys (the backfill's first pass completed)."""
    marker = await db[MIGRATIONS].find_one({"_id": BACKFILL}, {"done": 1})
    return bool(marker and marker.get("done"))


async def backfill_search_keys(db: AsyncDatabase[Document], *, batch: int = BACKFILL_BATCH) -> int:
    """Give the orders stored without search keys their keys, in `_id` order from where the
    last pass stopped; once a pass reached the last order, make sure of the index and mark
    the keys ready. Returns how many orders it changed.

    Every write is conditional on the order still lacking keys and on the text it was
    computed from (which never changes once placed), so passes of several processes at
    once only repeat each other's reads."""
    marker = await db[MIGRATIONS].find_one({"_id": BACKFILL}) or {}
    after = marker.get("after")
    if after is not None and marker.get("done"):
        after -= RECHECK_IDS
    changed = 0
    if not marker.get("done"):
        log.info("giving the stored orders their search keys")
    while True:
        where = {} if after is None else {"_id": {"$gt": after}}
        docs = (
            await db[ORDERS]
            .find(where, {"search_text": 1, "keyed": {"$isArray": f"${SEARCH_KEYS}"}})
            .sort("_id", 1)
            .limit(batch)
            .to_list()
        )
        if not docs:
            break
        updates = [
            UpdateOne(
                {"_id": doc["_id"], SEARCH_KEYS: {"$exists": False}, "search_text": text},
                {"$set": {SEARCH_KEYS: search_keys(text)}},
            )
            for doc in docs
            if not doc["keyed"] and isinstance(text := doc.get("search_text"), str)
        ]
        if updates:
            changed += (await db[ORDERS].bulk_write(updates, ordered=False)).modified_count
        after = docs[-1]["_id"]
        await db[MIGRATIONS].update_one({"_id": BACKFILL}, {"$max": {"after": after}}, upsert=True)
        if len(docs) < batch:
            break
    await db[ORDERS].create_indexes([SEARCH_INDEX])
    await db[MIGRATIONS].update_one({"_id": BACKFILL}, {"$set": {"done": True}}, upsert=True)
    if not marker.get("done"):
        log.info("search keys given to %d stored orders", changed)
    return changed


async def run_backfill(db: AsyncDatabase[Document], *, retry_seconds: float = 5.0) -> None:
    """`backfill_search_keys` in the background at start-up, retried until one pass
    completes (outages are waited out)."""
    while True:
        try:
            await backfill_search_keys(db)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("giving orders their search keys failed; retrying", exc_info=True)
            await asyncio.sleep(retry_seconds)
        else:
            return
