"""The chaos producer: places every order of the workload and publishes its chain.

A chain's actions need the order's ids, which the producer learns from the `order.placed`
event (the chaos ref is in the order's metadata); each message is confirmed before the
next of the same order is published, so one order's actions enter the queue in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import PyMongoError

from devtools.chaos_amqp import EventRecorder, Publisher
from devtools.chaos_ledger import Produced
from devtools.chaos_workload import ACTION, PLACE, OrderIds, PlannedOrder, Workload, encode

log = logging.getLogger("chaos")

CONCURRENT_CHAINS = 200
"""Orders in flight at once: a chain waits for its `order.placed` event, which paces the load."""
ID_FROM_EVENT_SECONDS = 90.0
ID_FROM_DATABASE_SECONDS = 120.0
REJECTED_PATIENCE = 6.0
"""After a rejected placement: how long to look for a re-published copy that went through."""
STALL_SECONDS = 120.0
"""No message published and no event received for this long: the load is given up."""


class Pacer:
    """Hands out publish slots `1 / rate` seconds apart to however many publishers ask."""

    def __init__(self, rate: float) -> None:
        self._interval = 1 / rate if rate > 0 else 0.0
        self._next = time.monotonic()

    async def wait(self) -> None:
        if not self._interval:
            return
        now = time.monotonic()
        slot = max(self._next, now)
        self._next = slot + self._interval
        await asyncio.sleep(slot - now)


class IdBook:
    """Order ids learned from events, keyed by the chaos ref in the order's metadata.

    `order.placed` brings the ids. An `order.command_rejected` for the placement ends the
    wait early with None (a re-published copy may still be placed: then its ids replace it).
    """

    def __init__(self) -> None:
        self._ids: dict[str, asyncio.Future[OrderIds | None]] = {}

    def _future(self, ref: str) -> asyncio.Future[OrderIds | None]:
        if ref not in self._ids:
            self._ids[ref] = asyncio.get_running_loop().create_future()
        return self._ids[ref]

    def learned(self, ref: str, id: int, order_id: int) -> None:
        future = self._future(ref)
        if future.done():
            if future.result() is not None:
                return
            future = self._ids[ref] = asyncio.get_running_loop().create_future()
        future.set_result(OrderIds(id, order_id))

    def rejected(self, ref: str) -> None:
        future = self._future(ref)
        if not future.done():
            future.set_result(None)

    def known(self, ref: str) -> OrderIds | None:
        future = self._future(ref)
        return future.result() if future.done() else None

    def was_rejected(self, ref: str) -> bool:
        future = self._future(ref)
        return future.done() and future.result() is None

    async def wait(self, ref: str, timeout: float) -> OrderIds | None:  # noqa: ASYNC109
        """The ids, or None when the placement was rejected or `timeout` passed."""
        try:
            return await asyncio.wait_for(asyncio.shield(self._future(ref)), timeout)
        except TimeoutError:
            return None


@dataclass
class Producer:
    """Places every order and publishes its chain, one confirmed message after the other."""

    workload: Workload
    publisher: Publisher
    ids: IdBook
    orders: AsyncCollection[dict[str, Any]]
    pacer: Pacer
    steps_published: dict[str, int] = field(default_factory=dict)
    sent: int = 0
    ids_from_database: int = 0
    finished: bool = False

    def progress(self) -> float:
        return 1.0 if self.finished else self.sent / self.workload.messages

    async def run(self) -> None:
        slots = asyncio.Semaphore(CONCURRENT_CHAINS)
        try:
            async with asyncio.TaskGroup() as group:
                for order in self.workload.orders:
                    group.create_task(self._chain(order, slots))
        finally:
            self.finished = True

    async def _chain(self, order: PlannedOrder, slots: asyncio.Semaphore) -> None:
        async with slots:
            await self.pacer.wait()
            await self.publisher.publish(PLACE, encode(order.place_body), order.message_id)
            self.sent += 1
            self.steps_published[order.ref] = 0
            if not order.steps:
                return
            ids = await self._learn_ids(order)
            if ids is None:
                return
            for step in order.steps:
                await self.pacer.wait()
                await self.publisher.publish(ACTION, encode(step.body(ids)), step.message_id)
                self.sent += 1
                self.steps_published[order.ref] += 1

    async def _learn_ids(self, order: PlannedOrder) -> OrderIds | None:
        """From the `order.placed` event; if that is late, from MongoDB by idempotency key."""
        ids = await self.ids.wait(order.ref, ID_FROM_EVENT_SECONDS)
        if ids is not None:
            return ids
        rejected = self.ids.was_rejected(order.ref)
        patience = REJECTED_PATIENCE if rejected else ID_FROM_DATABASE_SECONDS
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline:
            with contextlib.suppress(PyMongoError):
                doc = await self.orders.find_one(
                    {"idempotency_key": order.idempotency_key}, {"_id": 1, "order_id": 1}
                )
                if doc is not None:
                    self.ids_from_database += 1
                    log.warning("%s: no order.placed event; id read from MongoDB", order.ref)
                    return OrderIds(doc["_id"], doc["order_id"])
            await asyncio.sleep(2.0)  # poll interval of the MongoDB fallback
            if (ids := self.ids.known(order.ref)) is not None:
                return ids
        log.error(
            "%s: placement %s; its chain is not published",
            order.ref,
            "rejected" if rejected else "never seen",
        )
        return None

    def produced(self) -> Produced:
        return Produced(
            steps_published=dict(self.steps_published),
            published=dict(self.publisher.published),
            republished=sum(self.publisher.republished.values()),
            publish_retries=self.publisher.retries,
            ids_from_database=self.ids_from_database,
        )


async def run_load(producer: Producer, recorder: EventRecorder) -> bool:
    """Run the producer; give up (False) when nothing is published or received for a while."""
    load = asyncio.create_task(producer.run())
    seen, since = (-1, -1), time.monotonic()
    while not load.done():
        await asyncio.wait({load}, timeout=5.0)
        if (producer.sent, recorder.deliveries) != seen:
            seen, since = (producer.sent, recorder.deliveries), time.monotonic()
        elif time.monotonic() - since > STALL_SECONDS:
            log.error("no progress for %.0fs: the load is given up", STALL_SECONDS)
            load.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await load
            return False
    await load
    return True


async def report_progress(producer: Producer, recorder: EventRecorder) -> None:
    while True:
        await asyncio.sleep(10)
        log.info(
            "published %d/%d, republished %d, events %d unique of %d delivered",
            producer.sent,
            producer.workload.messages,
            sum(producer.publisher.republished.values()),
            len(recorder.events),
            recorder.deliveries,
        )
