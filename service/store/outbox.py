"""The outbox relay: publishes the events waiting in order documents, then removes them.

Every change writes its event into the order's `outbox` array in the same atomic update, so
no change is committed without its event. After a command commits, its handler calls
`flush(order id)`: the order's pending events are published in version order, under a
per-order lock, with publisher confirms, and removed from the outbox at once (the removals
of events published together share one `bulk_write`). A periodic sweep publishes whatever a
crash or an outage left behind: at start-up everything, then what is older than
`grace_seconds`. A crash between publishing and removing leaves an event in the outbox: the
sweep publishes it once more (a repeated event id).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from service.batching import MicroBatcher
from service.domain.records import PendingEntries, PendingEvent
from service.failpoints import CRASH_BEFORE_PUBLISH, Failpoints
from service.store.client import ORDERS, Document

log = logging.getLogger(__name__)

BACKLOG_PIPELINE: list[Document] = [
    # Through the partial `outbox_pending` index: only orders with pending events are in it,
    # and every entry has its timestamp `at`.
    {
        "$match": {
            "outbox.0": {"$exists": True},
            "outbox.at": {"$gte": datetime(1970, 1, 1, tzinfo=UTC)},
        }
    },
    {"$group": {"_id": None, "events": {"$sum": {"$size": "$outbox"}}}},
]


class EventPublisher(Protocol):
    async def publish_event(self, event: PendingEvent) -> None:
        """Publish persistently and return once the broker confirmed it."""


class OutboxRelay:
    def __init__(
        self,
        db: AsyncDatabase[Document],
        publisher: EventPublisher,
        *,
        sweep_seconds: float,
        grace_seconds: float,
        failpoints: Failpoints | None = None,
        report_backlog: Callable[[int], None] | None = None,
    ) -> None:
        self._orders = db[ORDERS]
        self._report_backlog = report_backlog
        self._publisher = publisher
        self._sweep_seconds = sweep_seconds
        self._grace = timedelta(seconds=grace_seconds)
        self._failpoints = failpoints or Failpoints()
        self._clear: MicroBatcher[tuple[int, tuple[str, ...]], None] = MicroBatcher(
            self._clear_batch, max_size=500, max_wait=0.001
        )
        self._locks: dict[int, asyncio.Lock] = {}
        self._waiters: dict[int, int] = {}

    @contextlib.asynccontextmanager
    async def _order_lock(self, id: int) -> AsyncIterator[None]:
        lock = self._locks.setdefault(id, asyncio.Lock())
        self._waiters[id] = self._waiters.get(id, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._waiters[id] -= 1
            if not self._waiters[id]:
                del self._waiters[id], self._locks[id]

    async def flush(self, id: int, pending: PendingEntries | None = None) -> int:
        """Publish the pending events of order `id` in order, and remove them; return how
        many went out. `pending` is the outbox as a write of this process just returned
        it, which saves reading it again."""
        async with self._order_lock(id):
            if pending is None:
                doc = await self._orders.find_one({"_id": id}, {"outbox": 1})
                pending = [] if doc is None else doc.get("outbox", [])
            published: list[str] = []
            if pending:
                self._failpoints.crash_if(CRASH_BEFORE_PUBLISH)
            for entry in pending:
                event = PendingEvent(
                    entry["event_id"],
                    entry["routing_key"],
                    entry["payload"].encode(),
                    entry.get("correlation_id"),
                )
                try:
                    await self._publisher.publish_event(event)
                except Exception:
                    log.warning("publishing %s failed; it stays in the outbox", event.event_id)
                    break
                published.append(event.event_id)
            if published:
                await self._clear.submit((id, tuple(published)))
            return len(published)

    async def drain(self) -> None:
        """At shutdown: publish whatever is left in the outboxes."""
        await self.sweep(older_than=timedelta(0))

    async def _clear_batch(self, items: Sequence[tuple[int, tuple[str, ...]]]) -> list[None]:
        """Remove published events from their outboxes, many orders in one round trip."""
        await self._orders.bulk_write(
            [
                UpdateOne({"_id": id}, {"$pull": {"outbox": {"event_id": {"$in": list(ids)}}}})
                for id, ids in items
            ],
            ordered=False,
        )
        return [None] * len(items)

    async def publish_new(self, events: Sequence[tuple[int, PendingEvent]]) -> None:
        """Publish the first events of orders just created (nothing can precede them), all
        at once with confirms, and clear them from the outboxes in one update. Whatever
        fails stays for the sweep."""
        if not events:
            return
        self._failpoints.crash_if(CRASH_BEFORE_PUBLISH)
        results = await asyncio.gather(
            *(self._publisher.publish_event(event) for _, event in events),
            return_exceptions=True,
        )
        sent = [item for item, result in zip(events, results, strict=True) if result is None]
        if len(sent) < len(events):
            log.warning("%d events stay in the outbox for the sweep", len(events) - len(sent))
        if sent:
            await self._orders.update_many(
                {"_id": {"$in": [id for id, _ in sent]}},
                {"$pull": {"outbox": {"event_id": {"$in": [e.event_id for _, e in sent]}}}},
            )

    async def sweep(self, *, older_than: timedelta | None = None, limit: int = 500) -> int:
        """Flush every order whose oldest pending event is older than the grace period."""
        cutoff = datetime.now(UTC) - (self._grace if older_than is None else older_than)
        cursor = self._orders.find(
            {"outbox.0": {"$exists": True}, "outbox.at": {"$lte": cutoff}}, {"_id": 1}
        ).limit(limit)
        published = 0
        async for doc in cursor:
            published += await self.flush(doc["_id"])
        return published

    async def backlog(self) -> int:
        """How many events wait in outboxes, committed but not yet published."""
        cursor = await self._orders.aggregate(BACKLOG_PIPELINE)
        totals = await cursor.to_list(1)
        return int(totals[0]["events"]) if totals else 0

    async def run(self) -> None:
        """Sweep at start-up (everything a previous run left) and then periodically until
        cancelled; outages are waited out. After each sweep, the backlog left is reported
        (to the `outbox_backlog` gauge)."""
        older_than = timedelta(0)
        while True:
            try:
                published = await self.sweep(older_than=older_than)
                older_than = self._grace
                if published:
                    log.info("outbox sweep published %d events", published)
                if self._report_backlog is not None:
                    self._report_backlog(await self.backlog())
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("outbox sweep failed; retrying", exc_info=True)
            await asyncio.sleep(self._sweep_seconds)
