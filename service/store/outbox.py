"""The outbox relay: publishes the events waiting in order documents, then removes them.

Every change writes its event into the order's `outbox` array in the same atomic update, so
no change is committed without its event. After a command commits, its handler calls
`flush(order id)`; a periodic sweep publishes whatever a crash or an outage left behind.
Events of one order are published in version order, under a per-order lock.

Removing a published event is one more write of its order. The rollup applier writes the
same order anyway, to take its rollup deltas, so published events wait in this process's
`PublishedEvents` for the applier to remove them in that write. The relay removes those an
applier round that began after their publishing left, once they are `settle_seconds` old,
and any at 1.5 x `settle_seconds`; it waits for a running round of this process to end
first, for up to a quarter of `settle_seconds` (its write of the same orders would conflict
with the round's transaction and make it start over). So an event leaves within
2 x `settle_seconds`, inside the patience of another process's relay (below). Until then
this relay does not publish them again. A crash in between leaves them in the outbox:
the sweep publishes them once more (a repeated event id, as after any crash between
publishing and removing).

Another process's relay cannot tell a published event waiting in the outbox from one not
published yet. So a relay that finds entries it does not know ahead of its own new events
does not publish them: it publishes its own events ahead of them and looks again every
quarter of `settle_seconds`, until their writer has removed them; then it publishes the
rest of its own. An entry that stands at the head of the outbox (nothing ahead of it in its
writer's way) for `2 x settle_seconds + 0.5 s` (the patience) was left behind by a crash or
an outage: it is published first, as before. Another process's entries after this relay's
own are left to that process (it waits for ours), and the sweeps of start-up and shutdown
leave entries younger than the patience alone. Nothing is published out of order, and
nothing twice in a calm flow with several writing processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from service.batching import MicroBatcher
from service.domain.records import PendingEntries, PendingEvent
from service.failpoints import CRASH_BEFORE_PUBLISH, Failpoints
from service.store.client import ORDERS, Document

log = logging.getLogger(__name__)

SETTLE_AT_MOST = 1.5
"""A published event no applier round could take yet is removed by the relay at this
many times `settle_seconds` (plus a look's delay and the wait for a running round: within
2 x `settle_seconds`, inside the patience of another process's relay)."""

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


class PublishedEvents:
    """Events this process published whose outbox entries are not removed yet, by order."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._writing: Counter[int] = Counter()
        self._by_order: dict[int, set[str]] = {}
        self._since: deque[tuple[float, int]] = deque()
        """(when, order id) as they were added, oldest first; entries already removed
        from `_by_order` are skipped when they come up."""
        self._rounds = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._looked_at = float("-inf")
        """When the latest applier round that completed began: events added before it
        were there for the round to take."""

    def __len__(self) -> int:
        return sum(len(ids) for ids in self._by_order.values())

    @contextlib.contextmanager
    def writing(self, ids: Collection[int]) -> Iterator[None]:
        """While these orders are written and their events published: the applier leaves
        them for its next round, by when their events are known here."""
        self._writing.update(ids)
        try:
            yield
        finally:
            self._writing.subtract(ids)
            for id in ids:
                if self._writing[id] <= 0:
                    del self._writing[id]

    @contextlib.contextmanager
    def round(self) -> Iterator[None]:
        """Around one round of the rollup applier (its transaction and `forget`)."""
        began = self._clock()
        self._rounds += 1
        self._idle.clear()
        try:
            yield
            self._looked_at = max(self._looked_at, began)
        finally:
            self._rounds -= 1
            if not self._rounds:
                self._idle.set()

    async def no_round(self, timeout: float) -> None:  # noqa: ASYNC109
        """Once no applier round runs, or after `timeout` seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)

    def in_flight(self) -> list[int]:
        """The orders being written and published right now."""
        return list(self._writing)

    def add(self, id: int, event_ids: Collection[str]) -> None:
        self._by_order.setdefault(id, set()).update(event_ids)
        self._since.append((self._clock(), id))

    def known(self, id: int) -> frozenset[str]:
        """The events of order `id` published and not removed yet."""
        return frozenset(self._by_order.get(id, ()))

    def of(self, ids: Collection[int]) -> dict[int, frozenset[str]]:
        """Those of the orders `ids` (a look, nothing is taken: see `forget`)."""
        return {id: frozenset(self._by_order[id]) for id in ids if id in self._by_order}

    def forget(self, removed: Mapping[int, Collection[str]]) -> None:
        """These events' entries are removed from their outboxes."""
        for id, event_ids in removed.items():
            left = self._by_order.get(id)
            if left is not None:
                left.difference_update(event_ids)
                if not left:
                    del self._by_order[id]

    def due(
        self, older_than: float, *, unless_new: float | None = None
    ) -> dict[int, frozenset[str]]:
        """The events added at least `older_than` seconds ago (and any added to the same
        orders since). With `unless_new`: of those, the ones added before the latest
        completed applier round began, or at least `unless_new` seconds ago."""
        now = self._clock()
        cutoff = now - older_than
        if unless_new is not None:
            cutoff = min(cutoff, max(self._looked_at, now - unless_new))
        due: dict[int, frozenset[str]] = {}
        while self._since and self._since[0][0] <= cutoff:
            _, id = self._since.popleft()
            if id in self._by_order:
                due[id] = frozenset(self._by_order[id])
        return due


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
        settle_seconds: float = 0.0,
    ) -> None:
        self._orders = db[ORDERS]
        self._settle_seconds = settle_seconds
        self.published = PublishedEvents()
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
        self._patient = settle_seconds > 0
        self._patience = timedelta(seconds=2 * settle_seconds + 0.5 if self._patient else 0)
        """How long another process's entry may stay at the head of an outbox and still be
        on its way out (published, waiting for its removal); the sweeps of start-up and
        shutdown leave entries younger than that alone."""
        self._own: dict[int, set[str]] = {}
        """Events this process wrote and has not published yet, of the orders where it
        waits for another process's entries."""
        self._heads: dict[int, tuple[str, float]] = {}
        """Of the orders it waits on: the other process's entry at the head of the outbox,
        and since when this process has seen it there."""
        self._later: dict[int, asyncio.Task[None]] = {}

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

    async def flush(
        self, id: int, pending: PendingEntries | None = None, *, written: str | None = None
    ) -> int:
        """Publish the pending events of order `id` in order; return how many went out.

        `pending` is the outbox as a write of this process just returned it, which saves
        reading it again, and `written` the id of that write's event (not necessarily the
        last entry: another process may have written the order again meanwhile)."""
        async with self._order_lock(id):
            if pending is None:
                doc = await self._orders.find_one({"_id": id}, {"outbox": 1})
                pending = [] if doc is None else doc.get("outbox", [])
            if written is not None and self._patient:
                self._own.setdefault(id, set()).add(written)
            ready, wait = self._ready(id, pending)
            if wait:
                self._look_again(id)
            published: list[str] = []
            if ready:
                self._failpoints.crash_if(CRASH_BEFORE_PUBLISH)
            for entry in ready:
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
                await self._published(id, published)
            return len(published)

    def _ready(self, id: int, outbox: PendingEntries) -> tuple[PendingEntries, bool]:
        """The entries of `outbox` to publish now, in order, and whether to look again
        later for the rest (the module's docstring).

        While another process's entry is ahead of this process's own, it may be published
        and waiting for its removal: the own entries ahead of it go, the rest waits. Once
        that entry has stood at the head of the outbox (nothing ahead of it, so nothing in
        its way) for the patience, it was left behind, and goes first. Another process's
        entries after this process's last own one are left to it: it waits for ours."""
        known = self.published.known(id)
        own = self._own.pop(id, None)
        if not own or not self._patient:
            self._heads.pop(id, None)
            return [e for e in outbox if e["event_id"] not in known], False
        ids = [entry["event_id"] for entry in outbox]
        last = max((i for i, event_id in enumerate(ids) if event_id in own), default=-1)
        other = next((i for i in range(last) if ids[i] not in own and ids[i] not in known), None)
        if other is None or self._left_behind(id, ids, other):
            self._heads.pop(id, None)
            return [e for e in outbox[: last + 1] if e["event_id"] not in known], False
        self._own[id] = own
        return [e for e in outbox[:other] if e["event_id"] not in known], True

    def _left_behind(self, id: int, ids: list[str], other: int) -> bool:
        """Whether another process's entry at `other` has stood at the head of the outbox
        for the patience; since when is kept from one look to the next."""
        if other > 0:  # this process's own events are still ahead of it
            self._heads.pop(id, None)
            return False
        now = time.monotonic()
        head, since = self._heads.setdefault(id, (ids[0], now))
        if head != ids[0]:
            self._heads[id] = (ids[0], now)
            return False
        return now - since >= self._patience.total_seconds()

    def _look_again(self, id: int) -> None:
        if id not in self._later:
            self._later[id] = asyncio.create_task(self._flush_later(id), name="outbox-wait")

    async def _flush_later(self, id: int) -> None:
        try:
            await asyncio.sleep(self._settle_seconds / 4)
        finally:
            del self._later[id]
        try:
            await self.flush(id)
        except Exception:  # MongoDB or the broker away: the sweep publishes them
            log.warning("publishing the events of order %d failed; left for the sweep", id)
            self._own.pop(id, None)
            self._heads.pop(id, None)

    def writing(self, ids: Collection[int]) -> contextlib.AbstractContextManager[None]:
        """Around a write of these orders and the publishing of its events."""
        return self.published.writing(ids)

    async def _published(self, id: int, event_ids: Sequence[str]) -> None:
        """Left for the rollup applier to remove, or removed now when nothing waits."""
        if self._settle_seconds > 0:
            self.published.add(id, event_ids)
        else:
            await self._clear.submit((id, tuple(event_ids)))

    async def settle(self, *, older_than: float | None = None) -> int:
        """Remove the published events the applier has not taken (the module's docstring),
        or all those published at least `older_than` seconds ago; how many."""
        if older_than is None:
            await self.published.no_round(timeout=self._settle_seconds / 4)
            due = self.published.due(
                self._settle_seconds, unless_new=SETTLE_AT_MOST * self._settle_seconds
            )
        else:
            due = self.published.due(older_than)
        if not due:
            return 0
        items = [(id, tuple(ids)) for id, ids in due.items()]
        try:
            for start in range(0, len(items), 500):
                await self._clear_batch(items[start : start + 500])
        except BaseException:
            for id, ids in items:  # still to remove, at the next settle
                self.published.add(id, ids)
            raise
        self.published.forget(due)
        return sum(len(ids) for _, ids in items)

    async def drain(self) -> None:
        """At shutdown: publish the events waiting for another process's entries once those
        leave (within the patience), remove every published event, then publish what is
        left but other processes' young entries (their relays are on them)."""
        deadline = time.monotonic() + self._patience.total_seconds() + 1
        while self._later and (left := deadline - time.monotonic()) > 0:
            await asyncio.wait(list(self._later.values()), timeout=left)
        self._patient = False
        await self._stop_waiting()
        await self.settle(older_than=0)
        await self.sweep(older_than=self._patience)

    async def _stop_waiting(self) -> None:
        waiting = list(self._later.values())
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        self._own.clear()
        self._heads.clear()

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
        if sent and self._settle_seconds > 0:
            for id, event in sent:
                self.published.add(id, (event.event_id,))
        elif sent:
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
        """Sweep at start-up and then periodically until cancelled; outages are waited out.
        After each sweep, the backlog left is reported (to the `outbox_backlog` gauge).
        Published events the applier did not take are removed meanwhile (`settle`)."""
        settling = asyncio.create_task(self._settle_periodically(), name="outbox-settle")
        try:
            await self._sweep_periodically()
        finally:
            settling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await settling
            await self._stop_waiting()

    async def _settle_periodically(self) -> None:
        if self._settle_seconds <= 0:
            return
        while True:
            await asyncio.sleep(self._settle_seconds / 4)
            try:
                await self.settle()
            except asyncio.CancelledError:
                raise
            except Exception:  # MongoDB away: the events stay known, and are tried again
                log.warning("removing published events failed; retrying", exc_info=True)

    async def _sweep_periodically(self) -> None:
        # At start-up, what a previous run left behind (but other processes' young entries).
        older_than = self._patience
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
