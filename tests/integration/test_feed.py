"""The change feed of the orders against the real mongod: changes in the order they were
written, each applied exactly once with the checkpoint (across failures and a takeover), one
reader at a time under a fenced lease, and `pending` exact against a snapshot."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import pytest
from bson.timestamp import Timestamp
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from service.store.client import ORDERS, Document
from service.store.feed import FEEDS, ChangeFeed, LeaseLost, close_feed, open_feed, pending
from tests.e2e.waiting import eventually

FEED = "test-feed"
PIPELINE: list[Document] = [
    {
        "$project": {
            "clusterTime": 1,
            "documentKey": 1,
            "fullDocument.v": 1,
            "updateDescription.updatedFields.v": 1,
        }
    }
]
LEASE = 0.6


def holds(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    """`check` as `eventually` polls it."""

    async def polled() -> bool:
        return check()

    return polled


def key(change: Document) -> str:
    """`<id>:<version>` of the write a change is."""
    fields = change.get("fullDocument") or change["updateDescription"]["updatedFields"]
    return f"{change['documentKey']['_id']}:{fields['v']}"


class Recording:
    """Keeps the keys delivered, in order; applies by counting each key in `applied`, in the
    checkpoint's transaction. `failures` transactions fail after their writes; while
    `hold` is set, delivering waits for it to clear."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.db = db
        self.delivered: list[str] = []
        self.failures = 0
        self.hold: asyncio.Event | None = None
        self.arrived = asyncio.Event()

    async def deliver(self, changes: Sequence[Document]) -> None:
        self.arrived.set()
        if self.hold is not None:
            await self.hold.wait()
        self.delivered.extend(key(change) for change in changes)

    async def apply(self, changes: Sequence[Document], session: AsyncClientSession) -> None:
        for change in changes:
            await self.db["applied"].update_one(
                {"_id": key(change)}, {"$inc": {"n": 1}}, upsert=True, session=session
            )
        if self.failures:
            self.failures -= 1
            raise ConnectionError("the transaction fails after its writes")

    async def applied(self) -> dict[str, int]:
        return {doc["_id"]: doc["n"] async for doc in self.db["applied"].find()}


async def now(db: AsyncDatabase[Document]) -> Timestamp:
    reply = await db.command("ping")
    operation_time: Timestamp = reply["operationTime"]
    return operation_time


@contextlib.asynccontextmanager
async def running(feed: ChangeFeed) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(feed.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def reader(
    db: AsyncDatabase[Document], handler: Recording, owner: str = "one", max_batch: int = 1000
) -> ChangeFeed:
    return ChangeFeed(
        db,
        FEED,
        handler,
        owner=owner,
        pipeline=PIPELINE,
        lease_seconds=LEASE,
        max_batch=max_batch,
    )


async def write(db: AsyncDatabase[Document], *writes: tuple[int, int]) -> None:
    """(id, version): an insert at version 1, an update to the version otherwise."""
    for id, version in writes:
        if version == 1:
            await db[ORDERS].insert_one({"_id": id, "order_id": id, "v": 1})
        else:
            await db[ORDERS].update_one({"_id": id}, {"$set": {"v": version}})


@pytest.fixture
async def opened(db: AsyncDatabase[Document]) -> AsyncDatabase[Document]:
    await write(db, (100, 1))  # before the feed starts: not one of its changes
    await open_feed(db, FEED, await now(db))
    return db


async def test_changes_come_in_the_order_written_and_each_is_applied_once(
    opened: AsyncDatabase[Document],
) -> None:
    handler = Recording(opened)
    writes = [(1, 1), (2, 1), (1, 2), (2, 2), (1, 3), (100, 2)]
    async with running(reader(opened, handler)):
        await write(opened, *writes)
        await eventually(holds(lambda: len(handler.delivered) == len(writes)))
        await eventually(lambda: _applied_count(handler, len(writes)))
    assert handler.delivered == [f"{id}:{v}" for id, v in writes]
    assert await handler.applied() == {f"{id}:{v}": 1 for id, v in writes}


async def _applied_count(handler: Recording, count: int) -> bool:
    return sum((await handler.applied()).values()) == count


async def test_a_batch_whose_transaction_failed_is_delivered_again_and_applied_once(
    opened: AsyncDatabase[Document],
) -> None:
    handler = Recording(opened)
    handler.failures = 2
    writes = [(1, 1), (2, 1), (3, 1)]
    await write(opened, *writes)
    async with running(reader(opened, handler)):
        await eventually(lambda: _applied_count(handler, 3), timeout=10)
    assert await handler.applied() == {"1:1": 1, "2:1": 1, "3:1": 1}
    assert handler.delivered.count("1:1") == 3  # twice before each failed transaction


async def test_the_next_reader_reads_on_from_the_checkpoint(
    opened: AsyncDatabase[Document],
) -> None:
    first, second = Recording(opened), Recording(opened)
    async with running(reader(opened, first, owner="one")):
        await write(opened, (1, 1), (1, 2))
        await eventually(lambda: _applied_count(first, 2))
    # Cancelled: the lease was given up, so the next reader takes it at once.
    await write(opened, (2, 1), (1, 3))
    async with running(reader(opened, second, owner="two")):
        await eventually(holds(lambda: second.delivered == ["2:1", "1:3"]))
        await eventually(lambda: _applied_count(second, 4))
    assert await second.applied() == {"1:1": 1, "1:2": 1, "2:1": 1, "1:3": 1}


async def test_one_reader_at_a_time_and_a_lapsed_one_cannot_move_the_checkpoint(
    opened: AsyncDatabase[Document],
) -> None:
    first, second = Recording(opened), Recording(opened)
    one, two = reader(opened, first, owner="one"), reader(opened, second, owner="two")
    token = await one.take()
    assert token is not None
    assert await two.take() is None  # a live lease of another process
    first.hold = asyncio.Event()
    reading = asyncio.create_task(one.read(token))
    await write(opened, (1, 1), (2, 1))
    await asyncio.wait_for(first.arrived.wait(), 10)
    # The first reader stalls past its lease (held in `deliver`): the second takes over.
    await asyncio.sleep(LEASE * 1.2)
    assert await two.take() == token + 1
    first.hold.set()
    with pytest.raises(LeaseLost):
        await reading
    assert first.delivered in (["1:1"], ["1:1", "2:1"])  # its first batch: one or both
    assert await first.applied() == {}  # its transaction was refused
    async with running(two):
        await eventually(lambda: _applied_count(second, 2))
    assert second.delivered == ["1:1", "2:1"]
    assert await second.applied() == {"1:1": 1, "2:1": 1}


async def test_an_idle_reader_keeps_its_lease_and_moves_the_checkpoint(
    opened: AsyncDatabase[Document],
) -> None:
    handler = Recording(opened)
    async with running(reader(opened, handler)):
        await eventually(lambda: _resumes(opened))
        before = await opened[FEEDS].find_one({"_id": FEED})
        await opened["elsewhere"].insert_one({"x": 1})
        await asyncio.sleep(LEASE * 1.5)
        after = await opened[FEEDS].find_one({"_id": FEED})
    assert before is not None
    assert after is not None
    assert after["token"] == before["token"]  # the lease never lapsed
    assert after["resume"] != before["resume"]  # moved along an idle stream


async def _resumes(db: AsyncDatabase[Document]) -> bool:
    feed = await db[FEEDS].find_one({"_id": FEED})
    return feed is not None and feed["resume"] is not None


async def test_pending_is_exact_against_a_snapshot_while_changes_are_written(
    opened: AsyncDatabase[Document],
) -> None:
    """In one snapshot: the changes applied (`applied`, written with the checkpoint) plus the
    `pending` ones are at least every write done before the snapshot, and at most every
    write done by the end of the read; never one counted twice."""
    handler = Recording(opened)
    async with running(reader(opened, handler, max_batch=7)):
        done = 0
        seen: set[str] = set()
        for round in range(40):
            await write(opened, *[(1000 * round + n, 1) for n in range(5)])
            done += 5
            async with opened.client.start_session(snapshot=True) as session:
                applied = {doc["_id"] async for doc in opened["applied"].find({}, session=session)}
                changes = await pending(opened, FEED, PIPELINE, session)
            assert changes is not None
            keys = [key(change) for change in changes]
            assert not applied & set(keys)
            assert len(keys) == len(set(keys))
            assert len(applied) + len(keys) == done
            seen |= {"applied"} if applied else set()
            seen |= {"pending"} if keys else set()
        await eventually(lambda: _applied_count(handler, done))
    assert seen == {"applied", "pending"}  # both sides were exercised
    async with opened.client.start_session(snapshot=True) as session:
        assert await pending(opened, FEED, PIPELINE, session) == []
    assert set((await handler.applied()).values()) == {1}


async def test_pending_of_a_feed_never_opened_is_none(db: AsyncDatabase[Document]) -> None:
    async with db.client.start_session(snapshot=True) as session:
        assert await pending(db, FEED, PIPELINE, session) is None


async def test_a_feed_closed_or_opened_again_fences_its_reader_out(
    opened: AsyncDatabase[Document],
) -> None:
    handler = Recording(opened)
    feed = reader(opened, handler)
    token = await feed.take()
    assert token is not None
    await close_feed(opened, FEED)
    assert await feed.take() is None  # nothing to read while closed
    with pytest.raises(LeaseLost):
        await feed.read(token)
    async with opened.client.start_session(snapshot=True) as session:
        assert await pending(opened, FEED, PIPELINE, session) is None
    await write(opened, (1, 1))
    await open_feed(opened, FEED, await now(opened))
    await write(opened, (2, 1))
    with pytest.raises(LeaseLost):  # the reader from before the reopening
        await feed._checkpoint(token, [], None)
    async with running(feed):
        await eventually(lambda: _applied_count(handler, 1))
    assert await handler.applied() == {"2:1": 1}  # from where it was opened again


async def test_catch_up_takes_what_the_stream_holds_in_batches_and_stops(
    opened: AsyncDatabase[Document],
) -> None:
    handler = Recording(opened)
    feed = reader(opened, handler, max_batch=2)
    await write(opened, (1, 1), (2, 1), (3, 1), (1, 2), (2, 2))
    token = await feed.take()
    assert token is not None
    assert await feed.catch_up(token, limit=2) == 2  # one batch of two
    assert await handler.applied() == {"1:1": 1, "2:1": 1}
    assert await feed.catch_up(token) == 3  # the rest, to the end of the stream
    assert await feed.catch_up(token) == 0
    assert handler.delivered == ["1:1", "2:1", "3:1", "1:2", "2:2"]
    assert set((await handler.applied()).values()) == {1}
