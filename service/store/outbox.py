"""The outbox relay: publishes the events the orders' writes carry, from the orders' change
stream.

Every write of an order sets its event in the order's `event` field in the same atomic
write (service/store/orders.py), so no change is committed without its event, and the order
document is the outbox. The events feed (`service.store.feed`: one reader at a time, under a
fenced lease, from a checkpoint) reads the writes in the order they committed, and
`EventRelay.deliver` publishes each batch's events with publisher confirms (one order's in
the order written, different orders' concurrently) before the feed's checkpoint moves past
them. A crash, a lost lease or a broker outage in between leaves the checkpoint where it
was: the batch is read and published again (a repeated event id), never lost. Nothing is
written back to the orders: one write per change.

Orders written by an earlier version keep the events they had not published in an `outbox`
array: `publish_left_behind` publishes and removes them at start-up, before the events
feed starts (they are older than anything the feed reads).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol

from bson.timestamp import Timestamp
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from service.domain.records import PendingEvent
from service.failpoints import CRASH_BEFORE_PUBLISH, Failpoints
from service.store.client import ORDERS, Document
from service.store.documents import EVENT
from service.store.feed import FEEDS, open_feed, pending

log = logging.getLogger(__name__)

EVENTS_FEED = "events"
FEED_PIPELINE: tuple[Document, ...] = (
    {"$match": {"operationType": {"$in": ["insert", "update", "replace"]}}},
    {
        "$project": {
            "clusterTime": 1,
            "documentKey": 1,
            f"fullDocument.{EVENT}": 1,
            f"updateDescription.updatedFields.{EVENT}": 1,
        }
    },
)
"""The events feed reads only the event of each write, and the order it belongs to."""
COUNT_PIPELINE: tuple[Document, ...] = (
    {
        "$match": {
            "operationType": {"$in": ["insert", "update", "replace"]},
            "$or": [
                {f"fullDocument.{EVENT}": {"$exists": True}},
                {f"updateDescription.updatedFields.{EVENT}": {"$exists": True}},
            ],
        }
    },
    {"$project": {"clusterTime": 1}},
)
"""The writes with an event, and nothing of them but when: what `backlog` counts."""
LEFT_BEHIND: Document = {
    "outbox.0": {"$exists": True},
    "outbox.at": {"$gte": datetime(1970, 1, 1, tzinfo=UTC)},
}
"""Orders with events an earlier version did not publish, through the partial
`outbox_pending` index (every entry has its timestamp `at`)."""


class EventPublisher(Protocol):
    async def publish_event(self, event: PendingEvent) -> None:
        """Publish persistently and return once the broker confirmed it."""


def pending_event(entry: Document) -> PendingEvent:
    """An event as a write stored it (`documents.event_entry`)."""
    return PendingEvent(
        entry["event_id"],
        entry["routing_key"],
        entry["payload"].encode(),
        entry.get("correlation_id"),
    )


def events_of(changes: Sequence[Document]) -> dict[int, list[PendingEvent]]:
    """The events of the writes that `changes` (the events feed's) are, by order, each
    order's in the order written."""
    by_order: dict[int, list[PendingEvent]] = {}
    for change in changes:
        fields = change.get("fullDocument") or change.get("updateDescription", {}).get(
            "updatedFields", {}
        )
        entry = fields.get(EVENT)
        if entry is not None:
            by_order.setdefault(change["documentKey"]["_id"], []).append(pending_event(entry))
    return by_order


class EventRelay:
    """The events feed's handler."""

    def __init__(self, publisher: EventPublisher, *, failpoints: Failpoints | None = None) -> None:
        self._publisher = publisher
        self._failpoints = failpoints or Failpoints()

    async def deliver(self, changes: Sequence[Document]) -> None:
        """Publish the events of `changes`: one order's one after another, in the order
        written; different orders' at once. Any that fails fails the batch, which the feed
        reads and publishes again."""
        by_order = events_of(changes)
        if not by_order:
            return
        self._failpoints.crash_if(CRASH_BEFORE_PUBLISH)
        results = await asyncio.gather(
            *(self._in_order(events) for events in by_order.values()), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _in_order(self, events: list[PendingEvent]) -> None:
        for event in events:
            await self._publisher.publish_event(event)

    async def apply(self, changes: Sequence[Document], session: AsyncClientSession) -> None:
        """Nothing is written with the checkpoint: the events went out before it."""


async def open_events_feed(db: AsyncDatabase[Document]) -> None:
    """Open the events feed at the current cluster time, unless it is open: the first
    process of this version to start opens it, before any of them writes."""
    if await db[FEEDS].find_one({"_id": EVENTS_FEED, "open": True}, {"_id": 1}) is None:
        reply = await db.command("ping")
        now: Timestamp = reply["operationTime"]
        await open_feed(db, EVENTS_FEED, now, only_new=True)


async def publish_left_behind(db: AsyncDatabase[Document], publisher: EventPublisher) -> int:
    """Publish the events an earlier version left in `outbox` arrays, each order's in order,
    and remove them; how many. What fails to publish stays for the next start."""
    published = 0
    async for doc in db[ORDERS].find(LEFT_BEHIND, {"outbox": 1}):
        sent: list[str] = []
        try:
            for entry in doc["outbox"]:
                await publisher.publish_event(pending_event(entry))
                sent.append(entry["event_id"])
        finally:
            if sent:
                await db[ORDERS].update_one(
                    {"_id": doc["_id"]}, {"$pull": {"outbox": {"event_id": {"$in": sent}}}}
                )
                published += len(sent)
    if published:
        log.info("published %d events an earlier version left in outboxes", published)
    return published


async def backlog(db: AsyncDatabase[Document]) -> int:
    """How many events are committed and not yet published: the writes after the events
    feed's checkpoint."""
    async with db.client.start_session(snapshot=True) as session:
        changes = await pending(db, EVENTS_FEED, COUNT_PIPELINE, session)
    return 0 if changes is None else len(changes)
