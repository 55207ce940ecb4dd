"""The app factory: settings, broker, Mongo client and relay, wired in the lifespan.

Run with `faststream run --factory service.app:create_app`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from faststream import FastStream
from faststream.rabbit import Channel, RabbitBroker
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from service.config import Settings
from service.handlers.delivery import Courier
from service.handlers.orders import OrderHandlers, order_router
from service.store.client import connect, database, ensure_indexes
from service.store.orders import OrderStore
from service.store.outbox import OutboxRelay
from service.store.queries import OrderQueries
from service.store.stats import OrderStats
from service.topology import Topology, topology
from service.usecases import OrderService

log = logging.getLogger("service")

STARTUP_WAIT_SECONDS = 60.0


def create_app(settings: Settings | None = None) -> FastStream:
    settings = settings or Settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    names = topology(settings)
    broker = RabbitBroker(
        settings.amqp_url.get_secret_value(),
        default_channel=Channel(prefetch_count=settings.prefetch),
        graceful_timeout=30.0,
        log_level=logging.DEBUG,
    )
    courier = Courier(broker, settings, names)
    handlers = OrderHandlers()
    broker.include_router(order_router(handlers, courier, names))
    relay_task: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        nonlocal relay_task
        client = connect(settings.mongo_url.get_secret_value())
        try:
            db = database(client, settings.mongo_database)
            await _wait_for_mongo(client)
            await ensure_indexes(db)
            await broker.connect()
            await _declare(broker, names)
            relay = OutboxRelay(
                db,
                courier,
                sweep_seconds=settings.outbox_sweep_seconds,
                grace_seconds=settings.outbox_grace_seconds,
            )
            handlers.service = OrderService(
                OrderStore(db),
                OrderQueries(db),
                OrderStats(db),
                relay,
                default_currency=settings.default_currency,
            )
            relay_task = asyncio.create_task(relay.run(), name="outbox-relay")
            yield
        finally:
            await client.close()

    async def stop_relay() -> None:
        if relay_task is not None:
            relay_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relay_task

    return FastStream(broker, lifespan=lifespan, after_shutdown=[stop_relay])


async def _wait_for_mongo(client: object) -> None:
    """Wait (bounded) for MongoDB at start-up instead of failing on a slow replica set."""

    assert isinstance(client, AsyncMongoClient)
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


async def _declare(broker: RabbitBroker, names: Topology) -> None:
    """Exchanges the handlers publish to, and the dead-letter queue, before consuming starts."""
    await broker.declare_exchange(names.commands)
    await broker.declare_exchange(names.events)
    await broker.declare_exchange(names.dead_letters)
    dead = await broker.declare_queue(names.dead_letter_queue)
    await dead.bind(names.dead_letters.name, routing_key="#")
