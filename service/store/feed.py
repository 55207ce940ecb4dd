"""A change feed of the orders: one process at a time reads the orders collection's change
stream from a checkpoint and hands each batch of changes on; the checkpoint moves in the
same transaction as the batch's writes. The events feed (`service.store.outbox`) and the
rollups feed (`service.store.rollups.applier`) read each write's event and deltas this way,
so an order is written once per change (docs/design.md, "Reliability").

- **One reader at a time.** The reader holds a lease on its feed's document in `feeds`,
  renewed while it reads (times are the server's). Another process takes the feed over
  once the lease lapses: its reader died, or lost MongoDB. Every move of the checkpoint is
  fenced by the lease's token, so a reader that lost its lease cannot move it any more;
  the batch it was on is read again by the new reader.
- **At least once, then exactly once.** `ChangeHandler.deliver` runs before the
  transaction (publishing, say) and may see a batch again after a crash or a takeover;
  `ChangeHandler.apply` runs in the transaction that moves the checkpoint (adding to
  rollups, say), so its writes take each change exactly once.
- **In oplog order.** Changes come in the order their writes committed: one order's
  changes in the order they were written.
- **Batches grow with the load.** A batch is what the stream holds when the reader comes
  back for more (up to `max_batch`): one change when idle, many when busy, no wait added.

`pending` reads, for a caller's snapshot of what the feed's handler wrote, the changes
that snapshot does not hold yet: from the checkpoint the snapshot saw up to the snapshot's
cluster time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from bson.timestamp import Timestamp
from pymongo.asynchronous.change_stream import AsyncChangeStream
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from service.store.client import ORDERS, Document

log = logging.getLogger(__name__)

FEEDS = "feeds"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
LEASE_SECONDS = 10.0
"""How long a reader's lease lasts unless renewed; it is renewed every third of that."""
MAX_BATCH = 1000
HAND_ON_SECONDS = 5.0
"""How long a reader told to stop (cancelled) waits for the batch it is handing on."""
PENDING_AWAIT_MS = 1
"""How long `pending`'s last read of the stream waits for more (it is at the end)."""
PENDING_BATCH = 1000
"""Changes `pending` asks for in the stream's first batch: a first batch with fewer ends at
the end of the stream, so no further read (and no wait) is needed."""


class LeaseLost(Exception):
    """Another process took the feed over: this reader's checkpoints are refused."""


class ChangeHandler(Protocol):
    async def deliver(self, changes: Sequence[Document]) -> None:
        """Before the checkpoint moves past `changes`: at least once."""

    async def apply(self, changes: Sequence[Document], session: AsyncClientSession) -> None:
        """In the transaction (`session`) that moves the checkpoint past `changes`."""


async def open_feed(
    db: AsyncDatabase[Document],
    name: str,
    after: Timestamp,
    session: AsyncClientSession | None = None,
    *,
    only_new: bool = False,
) -> None:
    """Start feed `name` over with the changes after cluster time `after`. A reader of it
    from before (or from before it was closed) can no longer move its checkpoint. With
    `only_new`, a feed that exists (open or closed) is left as it is."""
    if only_new:
        with contextlib.suppress(DuplicateKeyError):
            await db[FEEDS].insert_one(
                {
                    "_id": name,
                    "open": True,
                    "after": after,
                    "resume": None,
                    "owner": None,
                    "until": EPOCH,
                    "token": 1,
                },
                session=session,
            )
        return
    await db[FEEDS].update_one(
        {"_id": name},
        {
            "$set": {"open": True, "after": after, "resume": None, "owner": None, "until": EPOCH},
            "$inc": {"token": 1},
        },
        upsert=True,
        session=session,
    )


async def close_feed(
    db: AsyncDatabase[Document], name: str, session: AsyncClientSession | None = None
) -> None:
    """Stop feed `name`: its reader can no longer move its checkpoint, none takes it, and
    `pending` has nothing to tell, until it is opened again."""
    await db[FEEDS].update_one(
        {"_id": name}, {"$set": {"open": False}, "$inc": {"token": 1}}, session=session
    )


def _stream_from(feed: Document) -> dict[str, Any]:
    """Where a stream reading on from the checkpoint `feed` starts (`watch`'s arguments)."""
    if feed.get("resume") is not None:
        return {"resume_after": feed["resume"]}
    after: Timestamp = feed["after"]
    return {"start_at_operation_time": Timestamp(after.time, after.inc + 1)}


async def pending(
    db: AsyncDatabase[Document],
    name: str,
    pipeline: Sequence[Document],
    session: AsyncClientSession,
) -> list[Document] | None:
    """The changes after feed `name`'s checkpoint as `session` (a snapshot) sees it, up to
    the snapshot's cluster time: what the feed's handler had not written in that snapshot.
    Read from the stream until a change after the snapshot comes (`pipeline` keeps each
    change's `clusterTime`), or the stream's end: under load the end moves on as fast as
    it is read. None when the feed is not open."""
    feed = await db[FEEDS].find_one({"_id": name}, session=session)
    return await pending_after(db, feed, pipeline, session)


async def pending_after(
    db: AsyncDatabase[Document],
    feed: Document | None,
    pipeline: Sequence[Document],
    session: AsyncClientSession,
) -> list[Document] | None:
    """`pending`, for the feed's document as `session` read it (with other documents, in
    one round trip)."""
    if feed is None or not feed.get("open"):
        return None
    # The snapshot's cluster time, which PyMongo keeps from the session's first read (it
    # has no public accessor).
    until: Timestamp | None = session._snapshot_time
    changes: list[Document] = []
    async with await db[ORDERS].watch(
        list(pipeline),
        max_await_time_ms=PENDING_AWAIT_MS,
        batch_size=PENDING_BATCH,
        **_stream_from(feed),
    ) as stream:
        # The first batch came with the stream; one with room left reached the stream's end
        # (`_data`, the cursor's changes received: PyMongo has no public way to tell).
        at_end = len(stream._cursor._data) < PENDING_BATCH
        while not at_end or stream._cursor._has_next():
            change = await stream.try_next()
            if change is None:
                break
            at = change.get("clusterTime")
            if until is not None and at is not None and at > until:
                break
            changes.append(change)
    return changes


class ChangeFeed:
    """The reader of feed `name` (opened with `open_feed`) while this process holds its
    lease; `run` takes the lease whenever it is free."""

    def __init__(
        self,
        db: AsyncDatabase[Document],
        name: str,
        handler: ChangeHandler,
        *,
        owner: str,
        pipeline: Sequence[Document] = (),
        lease_seconds: float = LEASE_SECONDS,
        max_batch: int = MAX_BATCH,
        transactional: bool = True,
    ) -> None:
        """`transactional=False`: the handler's `apply` writes nothing, so the checkpoint
        moves in a fenced update alone, without a transaction."""
        self._db = db
        self._transactional = transactional
        self._feeds = db[FEEDS]
        self._name = name
        self._handler = handler
        self._owner = owner
        self._pipeline = list(pipeline)
        self._lease_ms = int(lease_seconds * 1000)
        self._lease_seconds = lease_seconds
        self._max_batch = max_batch
        self._handing: asyncio.Future[None] | None = None
        """The batch being handed on and checkpointed, which a stop lets finish."""

    async def run(self) -> None:
        """Read whenever this process holds the lease, until cancelled; outages are waited
        out. Cancelled, it lets the batch it is handing on finish (for up to
        `HAND_ON_SECONDS`: a stop repeats nothing), and gives the lease up, so another
        process reads on at once."""
        while True:
            token = None
            try:
                token = await self.take()
                if token is not None:
                    await self.read(token)
            except asyncio.CancelledError:
                if self._handing is not None and not self._handing.done():
                    await asyncio.wait({self._handing}, timeout=HAND_ON_SECONDS)
                if token is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.shield(self.release(token))
                raise
            except LeaseLost:
                log.warning("feed %s was taken over by another process", self._name)
            except Exception:
                log.warning("reading feed %s failed; retrying", self._name, exc_info=True)
            await asyncio.sleep(self._lease_seconds / 3)

    async def take(self) -> int | None:
        """The lease's new fencing token when this process now holds it (a new token also
        when it held it already: its reader starts over); None while another process
        holds a live one, or the feed is not open."""
        taken = await self._feeds.find_one_and_update(
            {
                "_id": self._name,
                "open": True,
                "$or": [{"owner": self._owner}, {"$expr": {"$lt": ["$until", "$$NOW"]}}],
            },
            [
                {
                    "$set": {
                        "token": {"$add": ["$token", 1]},
                        "owner": self._owner,
                        "until": {"$add": ["$$NOW", self._lease_ms]},
                    }
                }
            ],
            projection={"token": 1},
            return_document=True,
        )
        return None if taken is None else int(taken["token"])

    async def release(self, token: int) -> None:
        await self._feeds.update_one(
            {"_id": self._name, "token": token}, {"$set": {"until": EPOCH}}
        )

    async def read(self, token: int) -> None:
        """Read and hand on batches under lease `token` until it is lost (LeaseLost) or
        the stream fails. While idle the lease is renewed, and the checkpoint moved to the
        stream's position (past other collections' writes, so no read starts far back)."""
        async with await self._stream(token, await_ms=self._lease_ms // 3) as stream:
            while True:
                await self._step(token, stream)

    async def catch_up(self, token: int, *, limit: int | None = None) -> int:
        """Read and hand on what the stream holds now under lease `token`, in batches,
        or at least `limit` changes of it; how many changes."""
        taken = 0
        async with await self._stream(token, await_ms=PENDING_AWAIT_MS) as stream:
            while limit is None or taken < limit:
                if not (step := await self._step(token, stream)):
                    break
                taken += step
        return taken

    async def _stream(self, token: int, *, await_ms: int) -> AsyncChangeStream[Document]:
        feed = await self._feeds.find_one({"_id": self._name, "token": token, "open": True})
        if feed is None:
            raise LeaseLost
        return await self._db[ORDERS].watch(
            self._pipeline, max_await_time_ms=await_ms, **_stream_from(feed)
        )

    async def _step(self, token: int, stream: AsyncChangeStream[Document]) -> int:
        """One batch handed on and checkpointed (none: the lease renewed and the checkpoint
        moved along the stream); how many changes."""
        changes = await self._batch(stream)
        self._handing = asyncio.ensure_future(self._hand_on(token, changes, stream.resume_token))
        await asyncio.shield(self._handing)
        return len(changes)

    async def _hand_on(
        self, token: int, changes: Sequence[Document], resume: Mapping[str, Any] | None
    ) -> None:
        if changes:
            await self._handler.deliver(changes)
        await self._checkpoint(token, changes, resume)

    async def _batch(self, stream: AsyncChangeStream[Document]) -> list[Document]:
        """The next change (waiting up to the stream's `max_await_time_ms`), then those the
        stream already holds. `_has_next` is the cursor's count of changes already received:
        PyMongo has no public way to take them without a getMore that waits."""
        change = await stream.try_next()
        if change is None:
            return []
        changes = [change]
        while len(changes) < self._max_batch and stream._cursor._has_next():
            more = await stream.try_next()
            if more is None:
                break
            changes.append(more)
        return changes

    async def _checkpoint(
        self, token: int, changes: Sequence[Document], resume: Mapping[str, Any] | None
    ) -> None:
        """In one transaction, fenced by `token`: the lease renewed, the checkpoint moved to
        `resume`, and the handler's writes for `changes` (a fenced update alone when the feed
        is not `transactional`)."""

        async def body(session: AsyncClientSession | None) -> None:
            moved = await self._feeds.update_one(
                {"_id": self._name, "token": token},
                [
                    {
                        "$set": {
                            "resume": {"$literal": resume},
                            "until": {"$add": ["$$NOW", self._lease_ms]},
                        }
                    }
                ],
                session=session,
            )
            if not moved.matched_count:
                raise LeaseLost
            if changes and session is not None:
                await self._handler.apply(changes, session)

        if not self._transactional:
            await body(None)
            return
        async with self._db.client.start_session() as session:
            await session.with_transaction(body)
