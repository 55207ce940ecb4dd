"""The composition root: what every entry point runs on, opened once per process:
MongoDB, its indexes and rollups, the outbox relay, the rollup applier and the use cases.

The AMQP worker (service/app.py) and the HTTP gateway (service/gateway) each open one core
with their own event publisher: the same store, the same outbox, the same events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
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
from service.store.orders import OrderStore
from service.store.outbox import EventPublisher, OutboxRelay
from service.store.queries import OrderQueries
from service.store.rollups.applier import RollupApplier
from service.store.rollups.build import ensure_rollups
from service.store.rollups.schema import ensure_rollup_indexes
from service.store.stats import OrderStats
from service.topology import ROUTING_KEYS, Topology

log = logging.getLogger("service")

STARTUP_WAIT_SECONDS = 120.0


@dataclass
class Core:
    store: OrderStore
    relay: OutboxRelay
    orders: OrderService
    database: AsyncDatabase[Document]
    background: list[asyncio.Task[None]] = field(default_factory=list)

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
    (waiting for RabbitMQ), then start the relay and the rollup applier; stop them on exit.

    `on_connect` sees the client as soon as it exists (the worker's readiness pings it);
    `on_broker` runs once RabbitMQ has answered, before the relay publishes anything;
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
        relay = OutboxRelay(
            db,
            publisher,
            sweep_seconds=settings.outbox_sweep_seconds,
            grace_seconds=settings.outbox_grace_seconds,
            failpoints=Failpoints(settings.failpoints),
            report_backlog=report_backlog,
        )
        store = OrderStore(db)
        orders = OrderService(
            store,
            OrderQueries(
                db, client, cursors=CursorCodec(await cursor_key(db, settings.cursor_key))
            ),
            OrderStats(db, client),
            relay,
            default_currency=settings.default_currency,
            batch_size=settings.batch_max_size,
            batch_wait=settings.batch_wait_ms / 1000,
        )
        applier = RollupApplier(client, db, currency=settings.default_currency)
        core = Core(store, relay, orders, db)
        core.background += [
            asyncio.create_task(relay.run(), name="outbox-relay"),
            asyncio.create_task(applier.run(interval=1.0), name="rollup-applier"),
        ]
        try:
            yield core
        finally:
            await core.stop_background()
    finally:
        await client.close()


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


async def _declare(url: str, names: Topology) -> None:
    """Exchanges the handlers publish to, the retry round and the dead letters, declared
    before consuming starts, on a connection of its own (FastStream caches the queues it
    declares with the channel it used, and the action queue needs its own channel)."""
    connection = await connect_any(url)
    async with connection:
        channel = await connection.channel()
        for exchange in (
            names.commands,
            names.events,
            names.dead_letters,
            names.retry,
            names.requeue,
        ):
            await channel.declare_exchange(exchange.name, exchange.type.value, durable=True)
        dead = await _queue(channel, names.dead_letter_queue)
        await dead.bind(names.dead_letters.name, routing_key="#")
        for delay in names.delay_queues():
            queue = await _queue(channel, delay)
            await queue.bind(names.retry.name, routing_key=delay.routing())
        for routing_key in ROUTING_KEYS:
            queue = await _queue(channel, names.queue(routing_key))
            await queue.bind(names.requeue.name, routing_key=f"*.{routing_key}")
        partitions = names.partition_exchange
        await channel.declare_exchange(partitions.name, partitions.type.value, durable=True)
        for partition in range(names.partitions):
            queue = await _queue(channel, names.partition_queue(partition))
            await queue.bind(partitions.name, routing_key=str(partition))


async def _queue(channel: aio_pika.abc.AbstractChannel, queue: RabbitQueue) -> AbstractQueue:
    return await channel.declare_queue(
        queue.name, durable=queue.durable, arguments=dict(queue.arguments or {})
    )
