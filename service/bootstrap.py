"""The composition root: what every entry point runs on, opened once per process:
MongoDB, its indexes and rollups, the events and rollups feeds and the use cases.

The AMQP worker (service/app.py) and the HTTP gateway (service/gateway) each open one core
with their own event publisher: the same store, the same feeds (one reader of each at a
time, in whichever process holds its lease), the same events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aio_pika
from aio_pika.abc import AbstractQueue
from faststream.rabbit import RabbitQueue
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from service.amqp_connection import connect_any
from service.application.usecases import OrderService
from service.config import Settings
from service.failpoints import Failpoints
from service.store.client import Document, connect, database, ensure_indexes
from service.store.cursors import CursorCodec, cursor_key
from service.store.feed import ChangeFeed
from service.store.orders import OrderStore
from service.store.outbox import (
    EVENTS_FEED,
    EventPublisher,
    EventRelay,
    backlog,
    open_events_feed,
    publish_left_behind,
)
from service.store.outbox import FEED_PIPELINE as EVENTS_PIPELINE
from service.store.queries import OrderQueries
from service.store.rollups.applier import RollupApplier
from service.store.rollups.build import ensure_rollups
from service.store.rollups.deltas import FEED_PIPELINE, ROLLUPS_FEED
from service.store.rollups.schema import ensure_rollup_indexes
from service.store.search import run_backfill
from service.store.stats import OrderStats
from service.topology import STREAM_RETENTION, Topology, is_stream

log = logging.getLogger("service")

STARTUP_WAIT_SECONDS = 120.0
BACKLOG_SECONDS = 2.0
"""How often the events not yet published are counted (the `outbox_backlog` gauge)."""
DRAIN_POLL_SECONDS = 0.05


@dataclass
class Core:
    store: OrderStore
    orders: OrderService
    database: AsyncDatabase[Document]
    background: list[asyncio.Task[None]] = field(default_factory=list)

    async def drain(self) -> None:
        """At shutdown: once every event committed is published (by this process's events
        feed reader or another's); the caller bounds the wait."""
        while True:  # polled: the events may be another process's to publish
            if not await backlog(self.database):
                return
            await asyncio.sleep(DRAIN_POLL_SECONDS)

    async def stop_background(self) -> None:
        await cancel(self.background)


@contextlib.asynccontextmanager
async def open_core(
    settings: Settings,
    names: Topology,
    publisher: EventPublisher,
    *,
    report_backlog: Callable[[int], None] | None = None,
    on_connect: Callable[[AsyncMongoClient[Document]], None] = lambda _: None,
    on_broker: Callable[[], Awaitable[None]] | None = None,
    mongo_timeout_ms: int = 5000,
) -> AsyncIterator[Core]:
    """Wait for MongoDB, make sure of the indexes and rollups, declare the broker topology
    (waiting for RabbitMQ), then start the events and rollups feeds; stop them on exit.

    `on_connect` sees the client as soon as it exists (the worker's readiness pings it);
    `on_broker` runs once RabbitMQ has answered, before the events feed publishes anything;
    `mongo_timeout_ms` bounds how long one operation waits for a MongoDB server."""
    client = connect(settings.mongo_url.get_secret_value(), timeout_ms=mongo_timeout_ms)
    on_connect(client)
    try:
        db = database(client, settings.mongo_database)
        await _wait_for_mongo(client)
        await ensure_indexes(db)
        await ensure_rollup_indexes(db, settings.default_currency)
        await ensure_rollups(db, settings.default_currency)
        await _wait_for_rabbitmq(settings.amqp_url.get_secret_value(), names)
        if on_broker is not None:
            await on_broker()
        await open_events_feed(db)
        try:
            await publish_left_behind(db, publisher)
        except Exception:  # what is left stays for the next start
            log.warning("publishing the events an earlier version left failed", exc_info=True)
        store = OrderStore(db)
        orders = OrderService(
            store,
            OrderQueries(
                db, client, cursors=CursorCodec(await cursor_key(db, settings.cursor_key))
            ),
            OrderStats(db, client),
            default_currency=settings.default_currency,
            batch_size=settings.batch_max_size,
            batch_wait=settings.batch_wait_ms / 1000,
        )
        owner = uuid.uuid4().hex
        events = ChangeFeed(
            db,
            EVENTS_FEED,
            EventRelay(publisher, failpoints=Failpoints(settings.failpoints)),
            owner=owner,
            pipeline=EVENTS_PIPELINE,
            transactional=False,  # the events go out before the checkpoint; nothing is written
        )
        rollups = ChangeFeed(
            db,
            ROLLUPS_FEED,
            RollupApplier(db, currency=settings.default_currency),
            owner=owner,
            pipeline=FEED_PIPELINE,
        )
        core = Core(store, orders, db)
        core.background += [
            asyncio.create_task(events.run(), name="events-feed"),
            asyncio.create_task(rollups.run(), name="rollups-feed"),
            asyncio.create_task(run_backfill(db), name="search-texts-backfill"),
        ]
        if report_backlog is not None:
            core.background.append(
                asyncio.create_task(_report_backlog(db, report_backlog), name="events-backlog")
            )
        try:
            yield core
        finally:
            await core.stop_background()
    finally:
        await client.close()


async def _report_backlog(db: AsyncDatabase[Document], report: Callable[[int], None]) -> None:
    while True:
        try:
            report(await backlog(db))
        except asyncio.CancelledError:
            raise
        except Exception:  # MongoDB away: reported again once it is back
            log.debug("counting the events not yet published failed", exc_info=True)
        await asyncio.sleep(BACKLOG_SECONDS)


async def cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _wait_for_mongo(client: AsyncMongoClient[Document]) -> None:
    """Wait (bounded) for MongoDB at start-up instead of failing on a slow replica set."""
    await _wait_until(lambda: client.admin.command("ping"), PyMongoError, "MongoDB", 1.0)


async def _wait_for_rabbitmq(url: str, names: Topology) -> None:
    """Declare the topology, waiting (bounded) for RabbitMQ if it is not up yet."""
    await _wait_until(
        lambda: _declare(url, names), (aio_pika.exceptions.AMQPError, OSError), "RabbitMQ", 2.0
    )


async def _wait_until(
    attempt: Callable[[], Awaitable[object]],
    errors: type[Exception] | tuple[type[Exception], ...],
    what: str,
    pause: float,
) -> None:
    """Repeat `attempt` every `pause` seconds while it raises `errors`, for at most
    STARTUP_WAIT_SECONDS; then its last error is raised."""
    deadline = asyncio.get_running_loop().time() + STARTUP_WAIT_SECONDS
    while True:
        try:
            await attempt()
        except errors:
            if asyncio.get_running_loop().time() > deadline:
                raise
            log.warning("waiting for %s", what)
            await asyncio.sleep(pause)
        else:
            return


class StaleQueues(Exception):
    """Queues left by an older version, declared with other arguments (a classic queue
    where this version declares a quorum one): RabbitMQ refuses to declare them again, and
    waiting does not help. Not an AMQPError, so the start-up wait gives up at once."""

    def __init__(self, refusals: dict[str, str]) -> None:
        self.refusals = refusals
        listed = "; ".join(f"{name}: {reason}" for name, reason in refusals.items())
        super().__init__(
            f"{len(refusals)} queue(s) were declared by an older version with other "
            f"arguments ({listed}). Stop every worker and gateway, run `make migrate-queues` "
            "(python -m service.migrate_queues, with the same ORDERS_* settings) to move their "
            "messages to the queues this version declares, then start the new workers."
        )


async def check_queues(url: str, names: Topology) -> None:
    """Declare the topology once, without waiting for RabbitMQ: raises StaleQueues when
    queues of an older version are in the way (a process checks this before it starts
    serving, so it can stop with one clear error), an AMQP or OS error when RabbitMQ is not
    reachable yet (open_core then waits for it)."""
    await _declare(url, names)


async def _declare(url: str, names: Topology) -> None:
    """Exchanges the handlers publish to, the retry round and the dead letters, declared
    before consuming starts, on a connection of its own (FastStream caches the queues it
    declares with the channel it used, and the action queue needs its own channel).

    Every queue is declared even after one is refused, so StaleQueues names them all. The
    history stream declared with other retention is kept as it is (`retention_differs`)."""
    connection = await connect_any(url)
    async with connection:
        channel = await connection.channel()
        for exchange in (
            names.commands,
            names.events,
            names.dead_letters,
            names.retry,
            names.requeue,
            names.partition_exchange,
        ):
            await channel.declare_exchange(exchange.name, exchange.type.value, durable=True)
        refusals: dict[str, str] = {}
        for declaration in names.declarations():
            try:
                queue = await _queue(channel, declaration.queue)
            except aio_pika.exceptions.ChannelPreconditionFailed as exc:
                reason = refusal_reason(exc)
                channel = await connection.channel()  # a refusal closes the channel
                if not retention_differs(declaration.queue, reason):
                    refusals[declaration.queue.name] = reason
                    continue
                log.warning(
                    "stream %s is kept with the retention it was created with (%s): the "
                    "ORDERS_HISTORY_* settings apply to a new stream; a policy changes this "
                    "one's (docs/event-history.md, Retention)",
                    declaration.queue.name,
                    reason,
                )
                queue = await channel.get_queue(declaration.queue.name, ensure=False)
            for source, routing_key in declaration.bindings:
                await queue.bind(source, routing_key=routing_key)
        if refusals:
            raise StaleQueues(refusals)


def retention_differs(queue: RabbitQueue, reason: str) -> bool:
    """Whether RabbitMQ refused to declare stream `queue` only because it exists with other
    retention arguments: its events are as good, and deleting it would lose them."""
    return is_stream(queue) and any(
        f"inequivalent arg '{arg}'" in reason for arg in STREAM_RETENTION
    )


def refusal_reason(exc: BaseException) -> str:
    """`inequivalent arg 'x-queue-type' ... received 'quorum' but current is 'classic'` out of
    aio-pika's PRECONDITION_FAILED."""
    text = str(exc.args[0] if exc.args else exc)
    _, _, reason = text.partition(" - ")
    return reason or text


async def _queue(channel: aio_pika.abc.AbstractChannel, queue: RabbitQueue) -> AbstractQueue:
    return await channel.declare_queue(
        queue.name, durable=queue.durable, arguments=dict(queue.arguments or {})
    )
