"""The health endpoints over real HTTP, against the real RabbitMQ and the session's mongod.

A worker whose consumer vanished (what the reported FastStream bug leaves behind after a
reconnect) is not ready until the watchdog has attached it again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import aiohttp
import pytest
from aio_pika.abc import AbstractIncomingMessage
from faststream.rabbit import RabbitBroker
from prometheus_client import CollectorRegistry, Counter
from pymongo import AsyncMongoClient

from devtools.embedded_mongo import free_port
from service.health import HealthServer, Phase, Readiness
from service.store.client import Document
from service.worker.consumers import QueueConsumer
from service.worker.watchdog import ConsumerWatchdog

QUEUE = "health.check"  # the test vhost goes at the end of the session


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url) as response:
        if response.content_type == "application/json":
            return response.status, await response.json()
        return response.status, await response.text()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def test_ready_only_while_running_with_every_consumer_attached(
    amqp_url: str, client: AsyncMongoClient[Document], http: aiohttp.ClientSession
) -> None:
    broker = RabbitBroker(amqp_url)

    async def handle(raw: AbstractIncomingMessage) -> None:
        await raw.ack()

    consumer = QueueConsumer(QUEUE, handle, lambda: broker._connection, prefetch=4)
    watchdog = ConsumerWatchdog(lambda: broker._connection, [consumer])
    readiness = Readiness(watchdog)
    registry = CollectorRegistry()
    Counter("probe", "A metric to find in the text.", registry=registry).inc()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = HealthServer(readiness, registry, host="127.0.0.1", port=port)
    await server.start()
    try:
        status, body = await get(http, f"{base}/health/ready")
        assert status == 503
        assert body["checks"] == {
            "worker": "starting",
            "consumers": f"not consuming {QUEUE}",
            "mongo": "not connected yet",
        }
        assert (await get(http, f"{base}/health/live"))[0] == 200

        readiness.client = client
        async with broker:
            await broker.start()
            connection = broker._connection
            assert connection is not None
            setup = await connection.channel()
            await setup.declare_queue(QUEUE)
            await consumer.start(connection)
            readiness.phase = Phase.RUNNING
            status, body = await get(http, f"{base}/health/ready")
            assert (status, body["status"]) == (200, "ready"), body

            assert consumer.channel is not None
            underlay = await consumer.channel.get_underlay_channel()
            (tag,) = cast(Any, underlay).consumers  # aiormq's channel
            await underlay.basic_cancel(tag)
            status, body = await get(http, f"{base}/health/ready")
            assert status == 503
            assert body["checks"] == {
                "worker": "ok",
                "consumers": f"not consuming {QUEUE}",
                "mongo": "ok",
            }

            assert await watchdog.check() == [QUEUE]
            assert (await get(http, f"{base}/health/ready"))[0] == 200

            readiness.phase = Phase.STOPPING
            status, body = await get(http, f"{base}/health/ready")
            assert (status, body["checks"]["worker"]) == (503, "stopping")
            await consumer.close()
            await setup.close()

        async with http.get(f"{base}/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
            assert "probe_total 1.0" in await response.text()
        openmetrics = "application/openmetrics-text; version=1.0.0"
        async with http.get(f"{base}/metrics", headers={"Accept": openmetrics}) as response:
            assert response.headers["Content-Type"].startswith(openmetrics)
            assert (await response.text()).endswith("# EOF\n")
    finally:
        await server.stop()
    with pytest.raises(aiohttp.ClientConnectionError):
        await get(http, f"{base}/health/live")


async def test_a_taken_port_is_an_error_at_start() -> None:
    port = free_port()
    readiness = Readiness(ConsumerWatchdog(lambda: None, []))
    first = HealthServer(readiness, CollectorRegistry(), host="127.0.0.1", port=port)
    await first.start()
    try:
        second = HealthServer(readiness, CollectorRegistry(), host="127.0.0.1", port=port)
        with pytest.raises(OSError, match="address already in use"):
            await second.start()
    finally:
        await first.stop()
