"""The lease on the build's marker: one process builds the rollups at a time, renews its
lease while it works, and every write of its build is fenced by the lease's token, so a
builder that lost its lease cannot write any more."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from service.store.client import Document
from service.store.rollups.schema import BUILT, ROLLUP_STATE

log = logging.getLogger(__name__)

LEASE_SECONDS = 30.0
"""How long a rollup build's lease lasts unless renewed; its builder renews it every third."""
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class LeaseLost(Exception):
    """Another process took the rollup build over: this one's writes are refused."""


async def take_lease(
    state: AsyncCollection[Document], owner: str, lease_seconds: float
) -> int | None:
    """The build's new fencing token when this process now holds the lease; 0 when another
    process holds a live one; None when the rollups are built. Times are the server's."""
    until = {"$add": ["$$NOW", int(lease_seconds * 1000)]}
    try:
        await state.insert_one(
            {
                "_id": BUILT,
                "done": False,
                "token": 1,
                "owner": owner,
                "until": datetime.now(UTC) + timedelta(seconds=lease_seconds),
            }
        )
    except DuplicateKeyError:
        pass
    else:
        return 1
    marker = await state.find_one({"_id": BUILT})
    if marker is None:
        return 0  # removed meanwhile: try again
    if marker.get("done", True):
        return None
    token = int(marker.get("token", 0)) + 1
    lapsed = await state.update_one(
        {
            "_id": BUILT,
            "done": False,
            "token": marker.get("token"),
            "$expr": {"$lt": [{"$ifNull": ["$until", EPOCH]}, "$$NOW"]},
        },
        [{"$set": {"token": token, "owner": owner, "until": until}}],
    )
    if lapsed.modified_count:
        log.warning("the rollup build of another process lapsed; building them here")
        return token
    return 0


async def leased(
    db: AsyncDatabase[Document], token: int, lease_seconds: float, build: Awaitable[None]
) -> None:
    """Run `build`, renewing the lease every third of its length; LeaseLost if it lapsed."""
    work = asyncio.ensure_future(build)
    try:
        while True:
            done, _ = await asyncio.wait({work}, timeout=lease_seconds / 3)
            if done:
                return work.result()
            renewed = await db[ROLLUP_STATE].update_one(
                {"_id": BUILT, "done": False, "token": token},
                [{"$set": {"until": {"$add": ["$$NOW", int(lease_seconds * 1000)]}}}],
            )
            if not renewed.matched_count:
                raise LeaseLost
    finally:
        if not work.done():
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError, LeaseLost):
                await work


async def fenced(
    db: AsyncDatabase[Document],
    token: int,
    write: Callable[[AsyncClientSession], Awaitable[None]],
) -> None:
    """`write` in a transaction that first bumps the marker under `token`: once another
    process has taken the lease (a write to the marker), this can no longer commit."""

    async def body(session: AsyncClientSession) -> None:
        fence = await db[ROLLUP_STATE].update_one(
            {"_id": BUILT, "done": False, "token": token},
            {"$inc": {"writes": 1}},
            session=session,
        )
        if not fence.matched_count:
            raise LeaseLost
        await write(session)

    async with db.client.start_session() as session:
        await session.with_transaction(body)
