"""The worker's health and metrics endpoints, over HTTP, while it serves real traffic."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from devtools.embedded_mongo import EmbeddedMongo

from .amqp_client import AmqpClient
from .contract import new_customer_id, simple_order
from .waiting import eventually
from .worker import Worker, WorkerLauncher, new_database, wait_until_ready

Labels = dict[str, str]


@pytest_asyncio.fixture(loop_scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def get(http: aiohttp.ClientSession, worker: Worker, path: str) -> tuple[int, Any]:
    async with http.get(f"{worker.http_url}{path}") as response:
        if response.content_type == "application/json":
            return response.status, await response.json()
        return response.status, await response.text()


async def test_ready_follows_mongodb_and_live_does_not(
    amqp_client: AmqpClient,
    launcher: WorkerLauncher,
    private_mongo: EmbeddedMongo,
    http: aiohttp.ClientSession,
) -> None:
    await amqp_client.ensure_open()
    launcher.mongo_url = private_mongo.url
    worker = launcher.start(new_database())
    await wait_until_ready(amqp_client, worker)
    last: tuple[int, Any] = (0, None)

    async def ready_is(status: int) -> bool:
        nonlocal last
        last = await get(http, worker, "/health/ready")
        return last[0] == status

    await eventually(lambda: ready_is(200), timeout=30, what="ready")
    assert last[1] == {
        "status": "ready",
        "checks": {"worker": "ok", "consumers": "ok", "mongo": "ok"},
    }

    private_mongo.stop()
    await eventually(lambda: ready_is(503), timeout=30, what="not ready without MongoDB")
    assert last[1]["status"] == "not ready"
    assert last[1]["checks"]["mongo"] != "ok"
    assert last[1]["checks"]["consumers"] == "ok"
    assert await get(http, worker, "/health/live") == (200, {"status": "alive"})

    private_mongo.restart()
    await eventually(lambda: ready_is(200), timeout=60, what="ready again")
    assert worker.process.poll() is None


def samples(text: str, name: str) -> list[tuple[Labels, float]]:
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    return sum(v for have, v in samples(text, name) if labels.items() <= have.items())


async def test_metrics_count_traffic_errors_and_dead_letters(
    client: AmqpClient, worker: Worker, http: aiohttp.ClientSession
) -> None:
    status, text = await get(http, worker, "/metrics")
    assert status == 200
    before_get = value(text, "orders_received_messages_total", handler="orders.get")
    before_action = value(text, "orders_received_messages_total", handler="orders.action")

    placed = await client.request("orders.place", simple_order(new_customer_id()))
    assert placed["success"] is True
    # taken from orders.action by the router's own consumer, not a FastStream subscriber
    cancelled = await client.request(
        "orders.action", {"id": placed["data"]["id"], "action": "cancel"}
    )
    assert cancelled["success"] is True
    refused = await client.request("orders.get", {"id": "not a number"})
    assert refused["error"]["code"] == "validation_error"
    await client.publish("orders.place", {"no": "order"})  # no reply_to: dead-lettered

    async def counted() -> bool:
        nonlocal text
        text = (await get(http, worker, "/metrics"))[1]
        return value(text, "orders_dead_lettered_total", routing_key="orders.place") >= 1

    await eventually(counted, timeout=30, what="the dead letter counted")

    assert value(text, "orders_received_messages_total", handler="orders.place") >= 2
    assert value(text, "orders_received_messages_total", handler="orders.get") == before_get + 1
    assert (
        value(text, "orders_received_messages_total", handler="orders.action") == before_action + 1
    )
    action = {"handler": "orders.action", "app_name": "orders", "broker": "rabbitmq"}
    assert value(text, "orders_received_processed_messages_total", status="acked", **action) >= 1
    assert value(text, "orders_received_processed_messages_duration_seconds_count", **action) >= 1
    assert value(text, "orders_received_messages_size_bytes_count", **action) >= 1
    assert value(text, "orders_received_messages_in_process", **action) == 0
    assert (
        value(
            text,
            "orders_received_processed_messages_duration_seconds_count",
            handler="orders.place",
        )
        >= 2
    )
    assert value(text, "orders_published_messages_total", destination="reply") >= 2
    assert (
        value(
            text,
            "orders_published_messages_total",
            destination="orders.events.order.placed",
            status="success",
        )
        >= 1
    )
    assert (
        value(
            text,
            "orders_published_messages_total",
            destination="orders.events.order.command_rejected",
        )
        >= 1
    )
    assert (
        value(text, "orders_errors_total", routing_key="orders.get", code="validation_error") >= 1
    )
    assert (
        value(text, "orders_errors_total", routing_key="orders.place", code="validation_error") >= 1
    )
    assert (
        value(
            text, "orders_dead_lettered_total", routing_key="orders.place", code="validation_error"
        )
        >= 1
    )
    assert samples(text, "orders_outbox_backlog")  # counted every 2 s, 0 when idle
