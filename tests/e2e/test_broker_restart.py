"""RabbitMQ restarted while orders flow: the worker reconnects, its consumers come back,
publishing resumes, and nothing acknowledged is lost.

It restarts the broker application (`rabbitmqctl stop_app` / `start_app`), which drops every
connection, so it is marked `restarts_broker`: tests/conftest.py runs such tests after all
the others. It reconnects the shared test client afterwards.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
import pytest_asyncio
from aio_pika.abc import AbstractRobustConnection
from pymongo import AsyncMongoClient

from service.store.outbox import backlog

from .amqp_client import AmqpClient
from .contract import STATUSES, new_customer_id, simple_order
from .gateway import start_gateway, stop_gateway, wait_until_serving
from .worker import WorkerLauncher, new_database, wait_until_ready

pytestmark = pytest.mark.restarts_broker

ORDERS = 150
WORK_QUEUES = (
    "orders.place", "orders.action", "orders.get", "orders.list", "orders.stats",
    "orders.statuses",
)  # fmt: skip


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


async def restart_broker() -> None:
    await asyncio.to_thread(rabbitmqctl, "stop_app")
    await asyncio.sleep(2.0)  # the broker is down for a while, as in a real restart
    await asyncio.to_thread(rabbitmqctl, "start_app")
    await asyncio.to_thread(rabbitmqctl, "await_startup")


@pytest_asyncio.fixture(loop_scope="session")
async def producer(amqp_url: str) -> AsyncIterator[AbstractRobustConnection]:
    connection = await aio_pika.connect_robust(amqp_url, reconnect_interval=1)
    yield connection
    await connection.close()


async def publish_until_confirmed(
    connection: AbstractRobustConnection,
    body: dict[str, Any],
    message_id: str,
    routing_key: str = "orders.place",
) -> int:
    """Publish persistently with a confirm; on a broken connection wait and publish again
    (safe: the order carries an idempotency key). Returns how many extra tries it took."""
    retries = 0
    while True:
        try:
            channel = await connection.channel(publisher_confirms=True)
            try:
                exchange = await channel.get_exchange("orders", ensure=False)
                await exchange.publish(
                    aio_pika.Message(
                        json.dumps(body).encode(),
                        content_type="application/json",
                        message_id=message_id,
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key=routing_key,
                )
            finally:
                if not channel.is_closed:
                    await channel.close()
        except (aio_pika.exceptions.AMQPError, ConnectionError, RuntimeError):
            retries += 1
            await asyncio.sleep(0.5)
        else:
            return retries


async def test_broker_restart_loses_nothing_and_consumers_come_back(
    amqp_client: AmqpClient,
    launcher: WorkerLauncher,
    producer: AbstractRobustConnection,
    mongo_url: str,
) -> None:
    await amqp_client.ensure_open()
    database = new_database()
    worker = launcher.start(database)
    await wait_until_ready(amqp_client, worker)

    setup = await producer.channel()
    events = await setup.declare_queue(f"e2e.restart.{uuid.uuid4().hex}", durable=True)
    await events.bind("orders.events", routing_key="order.placed")
    customer = new_customer_id()

    async def produce() -> int:
        retries = 0
        for number in range(ORDERS):
            body = {**simple_order(customer), "idempotency_key": f"{customer}-{number}"}
            retries += await publish_until_confirmed(producer, body, f"{customer}-{number}")
            await asyncio.sleep(0.02)
        return retries

    producing = asyncio.create_task(produce())
    await asyncio.sleep(1.0)
    await restart_broker()
    await producing

    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
    orders = mongo[database]["orders"]
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 120
        while await orders.count_documents({"customer_id": customer}) < ORDERS:
            assert loop.time() < deadline, "not every order was stored after the restart"
            await asyncio.sleep(0.5)
        assert await orders.count_documents({"customer_id": customer}) == ORDERS

        placed: set[str] = set()
        channel = await producer.channel()
        queue = await channel.get_queue(events.name)
        deadline = loop.time() + 60
        while len(placed) < ORDERS:
            assert loop.time() < deadline, f"only {len(placed)} order.placed events arrived"
            message = await queue.get(no_ack=True, fail=False, timeout=5)
            if message is None:
                await asyncio.sleep(0.2)
                continue
            event = json.loads(message.body)
            if event["order"]["customer_id"] == customer:
                placed.add(event["event_id"])
        assert len(placed) == ORDERS

        for name in WORK_QUEUES:  # the worker's consumers came back on every queue
            declared = await channel.declare_queue(name, passive=True)
            count = declared.declaration_result.consumer_count
            assert count is not None, name
            assert count >= 1, name

        await amqp_client.ensure_open()
        reply = await amqp_client.request("orders.statuses", {})
        assert reply["data"] == STATUSES
        assert worker.process.poll() is None
        await channel.queue_delete(events.name)
    finally:
        await mongo.close()


CHAIN = ["processing", "confirmed", "in_progress", "on_hold", "in_progress", "completed"]


@pytest.mark.parametrize("count", [1, 2], ids=["one-worker-applies-itself", "two-workers"])
async def test_broker_restart_keeps_each_orders_actions_in_order(
    amqp_client: AmqpClient,
    launcher: WorkerLauncher,
    producer: AbstractRobustConnection,
    mongo_url: str,
    count: int,
) -> None:
    """A producer that waits for each confirm keeps its actions in order in the queue; a
    restart in the middle must not let the workers apply them in another order: one worker
    alone, whose router applies the actions itself, or two, through the partitions."""
    await amqp_client.ensure_open()
    database = new_database()
    workers = [launcher.start(database) for _ in range(count)]
    for worker in workers:
        await wait_until_ready(amqp_client, worker)
    customer = new_customer_id()
    ids = []
    for _ in range(30):
        reply = await amqp_client.request("orders.place", simple_order(customer))
        ids.append(reply["data"]["id"])

    async def produce() -> None:
        for order_id in ids:
            for step, status in enumerate(CHAIN):
                body = {"id": order_id, "action": "update_status", "status": status}
                await publish_until_confirmed(
                    producer, body, f"{customer}-{order_id}-{step}", "orders.action"
                )

    producing = asyncio.create_task(produce())
    await asyncio.sleep(0.5)
    await restart_broker()
    await producing

    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
    orders = mongo[database]["orders"]
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 120
        done = {"customer_id": customer, "version": len(CHAIN) + 1}
        while await orders.count_documents(done) < len(ids):
            if loop.time() > deadline:
                break
            await asyncio.sleep(0.5)
        async for order in orders.find({"customer_id": customer}):
            history = [entry["to"] for entry in order["status_history"][1:]]
            assert history == CHAIN, f"order {order['_id']}: {history}"
        if count == 1:  # it did apply them itself
            assert "the only live worker" in workers[0].log_path.read_text()
    finally:
        await mongo.close()


async def test_http_changes_made_while_the_broker_is_down_publish_their_events_after(
    amqp_client: AmqpClient,
    producer: AbstractRobustConnection,
    amqp_url: str,
    mongo_url: str,
    tmp_path: Path,
) -> None:
    """With RabbitMQ stopped, the gateway still places and changes orders (answering within
    at once: the events feed publishes); their events wait in their orders and go out once
    the broker is back."""
    await amqp_client.ensure_open()
    database = new_database()
    gateway = start_gateway(amqp_url, mongo_url, database, tmp_path / "gateway.log")
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
    try:
        await asyncio.to_thread(wait_until_serving, gateway)
        setup = await producer.channel()
        events = await setup.declare_queue(f"e2e.http-outage.{uuid.uuid4().hex}", durable=True)
        await events.bind("orders.events", routing_key="order.#")

        await asyncio.to_thread(rabbitmqctl, "stop_app")
        try:
            async with httpx.AsyncClient(
                base_url=gateway.url, timeout=30, headers=gateway.auth
            ) as http:
                started = time.monotonic()
                placed = await http.post(
                    "/api/orders/place",
                    json=simple_order(new_customer_id()),
                    headers={"Idempotency-Key": f"outage-{uuid.uuid4().hex}"},
                )
                assert placed.status_code == 201, placed.text
                id = placed.json()["data"]["id"]
                acted = await http.post(
                    f"/api/orders/{id}/action",
                    json={"action": "update_status", "status": "processing"},
                )
                assert acted.status_code == 200, acted.text
                assert time.monotonic() - started < 15  # no publishing in the request
            assert await backlog(mongo[database]) == 2  # both committed, not published
        finally:
            await asyncio.to_thread(rabbitmqctl, "start_app")
            await asyncio.to_thread(rabbitmqctl, "await_startup")

        reader = await aio_pika.connect(amqp_url)  # the producer may not have reconnected yet
        channel = await reader.channel()
        queue = await channel.get_queue(events.name)
        received: dict[str, str] = {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while len(received) < 2:
            assert loop.time() < deadline, f"events after the restart: {received}"
            message = await queue.get(no_ack=True, fail=False, timeout=5)
            if message is None:
                await asyncio.sleep(0.2)
                continue
            event = json.loads(message.body)
            if event.get("id", event.get("order", {}).get("id")) == id:
                received[event["event_id"]] = event["event_type"]
        assert sorted(received.values()) == ["order.placed", "order.status_changed"]
        while await backlog(mongo[database]):
            assert loop.time() < deadline, "the backlog did not drain"
            await asyncio.sleep(0.2)
        await channel.queue_delete(events.name)
        await reader.close()
    finally:
        await mongo.close()
        assert stop_gateway(gateway) == 0, gateway.log_tail()
