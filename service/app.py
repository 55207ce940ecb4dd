"""The app factory: settings, broker, Mongo client and the events feed, wired in the lifespan.

Run with `faststream run --factory service.app:create_app`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from faststream import FastStream
from faststream.rabbit import Channel
from faststream.specification import AsyncAPI
from prometheus_client import CollectorRegistry
from pymongo import AsyncMongoClient

from service import amqp_decoding
from service.amqp_connection import rabbit_broker
from service.application.handlers import OrderHandlers
from service.bootstrap import Core, StaleQueues, cancel, open_core
from service.config import Settings
from service.health import HealthServer, Phase, Readiness
from service.logs import configure_logging
from service.metrics import ServiceMetrics
from service.store.client import Document
from service.store.membership import Membership
from service.topology import topology
from service.worker.consumers import QueueConsumer
from service.worker.delivery import Courier
from service.worker.orders import catalogue_router, served
from service.worker.partitions import (
    ActionRouter,
    Barriers,
    MembershipLoop,
    Ownership,
    PartitionConsumers,
    Solo,
    new_worker_id,
)
from service.worker.watchdog import ConsumerWatchdog

CATALOGUE_DESCRIPTION = (
    "The orders worker's messages: commands and queries on the `orders` exchange (topic), "
    "events on `orders.events` (topic), replies on the default exchange to the request's "
    "`reply_to`; every event is also kept in the stream `orders.events.history` (the event "
    "history), readable from any point. Bodies are UTF-8 JSON objects, content type "
    "application/json, at most 256 KiB. A refused command without `reply_to` is "
    "dead-lettered to `orders.dlx` (queue `orders.dead`) and announced as "
    "`order.command_rejected`."
)

EXIT_STALE_QUEUES = 78
"""The worker's exit code when it finds queues from an older version (EX_CONFIG)."""
log = logging.getLogger("service")


def create_app(settings: Settings | None = None) -> FastStream:
    settings = settings or Settings()
    configure_logging(settings.log_level, settings.log_json)
    # No message's properties may stop the consumers: see service/amqp_decoding.py.
    amqp_decoding.install()
    worker = Worker(settings, ServiceMetrics(CollectorRegistry()))
    return FastStream(
        worker.broker,
        specification=catalogue(worker),
        lifespan=worker.lifespan,
        after_startup=[worker.start_consumers, worker.start_watchdog],
        on_shutdown=[worker.stop_watchdog, worker.stop_consuming, worker.drain_outbox],
        after_shutdown=[worker.stop_background],
    )


def catalogue(worker: Worker) -> AsyncAPI:
    """The AsyncAPI document of the worker: `make docs-gen` writes it to docs/asyncapi.json.
    Its subscribers are those of the queues the worker consumes without FastStream
    (`Worker.catalogue`); the brokers share one server."""
    return AsyncAPI(
        worker.broker,
        worker.catalogue,
        title="Orders service",
        version="0.1.0",
        description=CATALOGUE_DESCRIPTION,
    )


class EveryConsumer:
    """The worker's consumers: of each routing key's queue and of the action partitions
    (readiness)."""

    def __init__(self, watchdog: ConsumerWatchdog, partitions: PartitionConsumers) -> None:
        self._watchdog = watchdog
        self._partitions = partitions

    async def missing(self) -> list[str]:
        return [*await self._watchdog.missing(), *await self._partitions.missing()]


class Worker:
    """The broker, the handlers and the background tasks of one worker process."""

    def __init__(self, settings: Settings, metrics: ServiceMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.names = topology(settings)
        url = settings.amqp_url.get_secret_value()
        self.broker = rabbit_broker(
            url,
            default_channel=Channel(prefetch_count=settings.prefetch),
            graceful_timeout=settings.shutdown_seconds,
            log_level=logging.DEBUG,
            fail_fast=False,  # started while RabbitMQ is down: wait for it
            middlewares=[metrics.middleware],
        )
        self.courier = Courier(self.broker, settings, self.names, metrics)
        self.handlers = OrderHandlers()
        self.lease_seconds = 3 * settings.membership_seconds
        """How long a worker's membership entry lasts without a renewal."""
        self.ownership = Ownership(
            new_worker_id(), self.names.partitions, lease_seconds=self.lease_seconds
        )
        barriers = Barriers()
        self.actions = ActionRouter(
            self.names,
            self.courier,
            self.handlers.act,
            lambda: self.broker._connection,
            max_message_bytes=settings.max_message_bytes,
            transient_retry_seconds=settings.transient_retry_seconds,
            prefetch=settings.prefetch,
            metrics=metrics.intake,
            solo=Solo(self.ownership, barriers, metrics),
            numbers=self.courier.admission.sequencing.numbers,
        )
        handles = served(self.handlers, self.courier)
        self.served = [
            QueueConsumer(
                self.names.queue(routing_key).name,
                handle,
                lambda: self.broker._connection,
                prefetch=settings.prefetch,
                metrics=metrics.intake,
            )
            for routing_key, handle in handles.items()
        ]
        """The consumers of every routing key's queue but `orders.action`'s."""
        # Never started: it carries every queue's subscriber for the document only.
        self.catalogue = rabbit_broker(url)
        self.catalogue.include_router(
            catalogue_router(handles, self.actions.route, self.names, prefetch=settings.prefetch)
        )
        self.partitions = PartitionConsumers(
            self.names,
            self.courier,
            self.handlers.act,
            self.ownership,
            metrics,
            prefetch=max(2, -(-settings.prefetch // self.names.partitions)),
            grace_seconds=settings.shutdown_seconds / 2,
            barriers=barriers,
        )
        self.membership: MembershipLoop | None = None
        self.watchdog = ConsumerWatchdog(
            lambda: self.broker._connection, [*self.served, self.actions.intake]
        )
        self.readiness = Readiness(EveryConsumer(self.watchdog, self.partitions))
        self.core: Core | None = None
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
        def watch(client: AsyncMongoClient[Document]) -> None:
            self.readiness.client = client

        try:
            async with open_core(
                self.settings,
                self.names,
                self.courier,
                report_backlog=self.metrics.backlog,
                on_connect=watch,
            ) as core:
                self.core = core
                self.actions.numbers.lookup = core.store.id_of  # the sequencer's too
                membership = Membership(core.database, lease_seconds=self.lease_seconds)
                await membership.ensure_indexes()
                self.membership = MembershipLoop(
                    membership, self.ownership, self.settings.membership_seconds
                )
                self.handlers.service = core.orders
                self.background = core.background
                yield
        except StaleQueues as exc:
            log.error("%s", exc)  # noqa: TRY400 - one line that says what to do, no trace
            raise SystemExit(EXIT_STALE_QUEUES) from None
        finally:
            self.readiness.client = None

    async def start_consumers(self) -> None:
        """Consume every action partition, `orders.action` and every other queue, then join
        the live workers: from then on the others hand this worker its share
        (service/worker/partitions.py)."""
        connection = self.broker._connection
        assert connection is not None, "started after the broker"
        await self.partitions.start(connection)
        await self.actions.intake.start(connection)
        for consumer in self.served:
            await consumer.start(connection)
        if self.membership is not None:
            self.background.append(
                asyncio.create_task(self.membership.run(), name="worker-membership")
            )

    async def start_watchdog(self) -> None:
        self.watchdog_task = asyncio.create_task(self.watchdog.run(), name="consumer-watchdog")
        self.readiness.phase = Phase.RUNNING

    async def stop_watchdog(self) -> None:
        self.readiness.phase = Phase.STOPPING
        await cancel([self.watchdog_task] if self.watchdog_task else [])

    async def stop_consuming(self) -> None:
        """On SIGTERM, while the broker can still publish: the worker's consumers stop, side
        by side. Places and queries: no more are taken and those in hand finish, then the
        channels close (anything unacked is requeued). Actions: handed over in order
        (`hand_over_actions`)."""
        grace = self.settings.shutdown_seconds / 2
        await asyncio.gather(
            *(consumer.stop(grace) for consumer in self.served), self.hand_over_actions()
        )

    async def hand_over_actions(self) -> None:
        """Route no more actions and let the admitted ones finish, then close the action
        channels (the routing one and every partition's) without cancelling the consumers:
        RabbitMQ requeues what this worker still held, in its place, before the next single
        active consumer takes over, so per-order order survives a shutdown. Then leave the
        live workers, so the others take this worker's partitions at once."""
        self.actions.gate.close()
        await self.courier.admission.drain_ordered(grace=self.settings.shutdown_seconds / 2)
        await self.partitions.close()
        if self.membership is not None:
            await self.membership.leave()
        await self.actions.intake.close()

    async def drain_outbox(self) -> None:
        """On SIGTERM, before the broker closes: until every committed event is published
        (bounded)."""
        if self.core is not None:
            with contextlib.suppress(Exception, TimeoutError):
                await asyncio.wait_for(self.core.drain(), timeout=5.0)

    async def stop_background(self) -> None:
        await cancel(self.background)
