"""The app factory: settings, broker, Mongo client and relay, wired in the lifespan.

Run with `faststream run --factory service.app:create_app`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

import aio_pika
from aio_pika.abc import AbstractQueue
from faststream import FastStream
from faststream.rabbit import Channel, RabbitBroker, RabbitQueue
from faststream.specification import AsyncAPI
from prometheus_client import CollectorRegistry
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from service.config import Settings
from service.failpoints import Failpoints
from service.handlers.delivery import Courier
from service.handlers.orders import OrderHandlers, order_router
from service.handlers.watchdog import ConsumerWatchdog
from service.health import HealthServer, Phase, Readiness
from service.logs import configure_logging
from service.metrics import ServiceMetrics
from service.store.client import Document, connect, database, ensure_indexes
from service.store.orders import OrderStore
from service.store.outbox import OutboxRelay
from service.store.queries import OrderQueries
from service.store.rollups import RollupApplier, ensure_rollup_indexes, ensure_rollups
from service.store.stats import OrderStats
from service.topology import ACTION, ROUTING_KEYS, Topology, topology
from service.usecases import OrderService

log = logging.getLogger("service")

STARTUP_WAIT_SECONDS = 120.0

CATALOGUE_DESCRIPTION = (
    "The orders worker's messages: commands and queries on the `orders` exchange (topic), "
    "events on `orders.events` (topic), replies on the default exchange to the request's "
    "`reply_to`. Bodies are UTF-8 JSON objects, content type application/json, at most "
    "256 KiB. A refused command without `reply_to` is dead-lettered to `orders.dlx` "
    "(queue `orders.dead`) and announced as `order.command_rejected`."
)


def create_app(settings: Settings | None = None) -> FastStream:
    settings = settings or Settings()
    configure_logging(settings.log_level, settings.log_json)
    worker = Worker(settings, ServiceMetrics(CollectorRegistry()))
    return FastStream(
        worker.broker,
        specification=catalogue(worker.broker),
        lifespan=worker.lifespan,
        after_startup=[worker.start_watchdog],
        on_shutdown=[worker.stop_watchdog, worker.hand_over_actions, worker.drain_outbox],
        after_shutdown=[worker.stop_background],
    )


def catalogue(broker: RabbitBroker) -> AsyncAPI:
    """The AsyncAPI document of the worker: `make docs-gen` writes it to docs/asyncapi.json."""
    return AsyncAPI(
        broker, title="Orders service", version="0.1.0", description=CATALOGUE_DESCRIPTION
    )


class Worker:
    """The broker, the handlers and the background tasks of one worker process."""

    def __init__(self, settings: Settings, metrics: ServiceMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.names = topology(settings)
        self.broker = RabbitBroker(
            settings.amqp_url.get_secret_value(),
            default_channel=Channel(prefetch_count=settings.prefetch),
            graceful_timeout=settings.shutdown_seconds,
            log_level=logging.DEBUG,
            fail_fast=False,  # started while RabbitMQ is down: wait for it
            middlewares=[metrics.middleware],
        )
        self.courier = Courier(self.broker, settings, self.names, metrics)
        self.handlers = OrderHandlers()
        self.broker.include_router(
            order_router(self.handlers, self.courier, self.names, prefetch=settings.prefetch)
        )
        self.watchdog = ConsumerWatchdog(self.broker)
        self.readiness = Readiness(self.watchdog)
        self.relay: OutboxRelay | None = None
        self.background: list[asyncio.Task[None]] = []
        self.watchdog_task: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """The health endpoints first (live while the rest waits for its services), then
        MongoDB, indexes, rollups, topology and the relay, before consuming starts."""
        settings = self.settings
        async with contextlib.AsyncExitStack() as stack:
            if settings.http_port:
                health = HealthServer(
                    self.readiness,
                    self.metrics.registry,
                    host=settings.http_host,
                    port=settings.http_port,
                )
                await health.start()
                stack.push_async_callback(health.stop)
            async with self._storage_and_relay():
                yield

    @contextlib.asynccontextmanager
    async def _storage_and_relay(self) -> AsyncIterator[None]:
        settings = self.settings
        client = connect(settings.mongo_url.get_secret_value())
        self.readiness.client = client
        try:
            db = database(client, settings.mongo_database)
            await _wait_for_mongo(client)
            await ensure_indexes(db)
            await ensure_rollup_indexes(db, settings.default_currency)
            await ensure_rollups(db, settings.default_currency)
            await _wait_for_rabbitmq(settings.amqp_url.get_secret_value(), self.names)
            self.relay = OutboxRelay(
                db,
                self.courier,
                sweep_seconds=settings.outbox_sweep_seconds,
                grace_seconds=settings.outbox_grace_seconds,
                failpoints=Failpoints(settings.failpoints),
                report_backlog=self.metrics.backlog,
            )
            store = OrderStore(db)
            self.courier.ordering.lookup = store.id_of
            self.handlers.service = OrderService(
                store,
                OrderQueries(db, client),
                OrderStats(db, client),
                self.relay,
                default_currency=settings.default_currency,
                batch_size=settings.batch_max_size,
                batch_wait=settings.batch_wait_ms / 1000,
            )
            applier = RollupApplier(client, db, currency=settings.default_currency)
            self.background += [
                asyncio.create_task(self.relay.run(), name="outbox-relay"),
                asyncio.create_task(applier.run(interval=1.0), name="rollup-applier"),
            ]
            yield
        finally:
            self.readiness.client = None
            await client.close()

    async def start_watchdog(self) -> None:
        self.watchdog_task = asyncio.create_task(self.watchdog.run(), name="consumer-watchdog")
        self.readiness.phase = Phase.RUNNING

    async def stop_watchdog(self) -> None:
        self.readiness.phase = Phase.STOPPING
        await _cancel([self.watchdog_task] if self.watchdog_task else [])

    async def hand_over_actions(self) -> None:
        """Let the admitted actions finish, then close their channel without cancelling the
        consumer: RabbitMQ requeues what this worker still held, in its place, before the
        next single active consumer takes over, so per-order order survives a shutdown."""
        await self.courier.drain_ordered(grace=self.settings.shutdown_seconds / 2)
        for subscriber in self.broker.subscribers:
            queue = getattr(subscriber, "_queue_obj", None)
            if subscriber.queue.name == ACTION and queue is not None:  # type: ignore[attr-defined]
                with contextlib.suppress(Exception):
                    await queue.channel.close()

    async def drain_outbox(self) -> None:
        """On SIGTERM, before the broker closes: publish what is pending (bounded)."""
        if self.relay is not None:
            with contextlib.suppress(Exception, TimeoutError):
                await asyncio.wait_for(self.relay.sweep(older_than=timedelta(0)), timeout=5.0)

    async def stop_background(self) -> None:
        await _cancel(self.background)


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _wait_for_mongo(client: AsyncMongoClient[Document]) -> None:
    """Wait (bounded) for MongoDB at start-up instead of failing on a slow replica set."""
    deadline = asyncio.get_running_loop().time() + STARTUP_WAIT_SECONDS
    while True:
        try:
            await client.admin.command("ping")
        except PyMongoError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            log.warning("waiting for MongoDB")
            await asyncio.sleep(1.0)
        else:
            return


async def _wait_for_rabbitmq(url: str, names: Topology) -> None:
    """Declare the topology, waiting (bounded) for RabbitMQ if it is not up yet."""
    deadline = asyncio.get_running_loop().time() + STARTUP_WAIT_SECONDS
    while True:
        try:
            await _declare(url, names)
        except (aio_pika.exceptions.AMQPError, OSError):
            if asyncio.get_running_loop().time() > deadline:
                raise
            log.warning("waiting for RabbitMQ")
            await asyncio.sleep(2.0)
        else:
            return


async def _declare(url: str, names: Topology) -> None:
    """Exchanges the handlers publish to, the retry round and the dead letters, declared
    before consuming starts, on a connection of its own (FastStream caches the queues it
    declares with the channel it used, and the action queue needs its own channel)."""
    connection = await aio_pika.connect(url)
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


async def _queue(channel: aio_pika.abc.AbstractChannel, queue: RabbitQueue) -> AbstractQueue:
    return await channel.declare_queue(
        queue.name, durable=queue.durable, arguments=dict(queue.arguments or {})
    )
