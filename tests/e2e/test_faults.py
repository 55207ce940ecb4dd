"""Real faults, injected for real: a crash between commit and publish, MongoDB down, a poison
message, and several workers keeping per-order order. No mocks of the broker or the database.

The broker restart lives in ``test_broker_restart.py`` (it drops every connection).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from pymongo import AsyncMongoClient

from devtools.embedded_mongo import EmbeddedMongo
from service.store.outbox import backlog

from .amqp_client import AmqpClient, DeadLetterReader, EventCollector, read_history
from .contract import new_customer_id, place, simple_order
from .waiting import eventually
from .worker import Worker, WorkerLauncher, new_database, wait_for_exit, wait_until_ready

Doc = dict[str, Any]


@pytest_asyncio.fixture(loop_scope="session")
async def fresh_client(amqp_client: AmqpClient) -> AmqpClient:
    await amqp_client.ensure_open()
    return amqp_client


@pytest_asyncio.fixture(loop_scope="session")
async def database_client(mongo_url: str) -> AsyncIterator[AsyncMongoClient[Doc]]:
    client: AsyncMongoClient[Doc] = AsyncMongoClient(mongo_url)
    yield client
    await client.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def test_crash_between_commit_and_publish_publishes_after_restart(
    fresh_client: AmqpClient, launcher: WorkerLauncher, database_client: AsyncMongoClient[Doc]
) -> None:
    client = fresh_client
    database = new_database()
    crashing = launcher.start(database, {"ORDERS_FAILPOINTS": '["crash-before-publish"]'})
    await wait_until_ready(client, crashing)
    events = await EventCollector.start(client.connection)
    orders = database_client[database]["orders"]
    try:
        customer_id = new_customer_id()
        message_id = await client.publish("orders.place", simple_order(customer_id))
        assert await wait_for_exit(crashing, 30) == -signal.SIGKILL

        stored = await orders.find_one({})
        assert stored is not None
        event_id = stored["event"]["event_id"]  # the change is committed with its event...
        assert events.matching(lambda e: e.body.get("event_id") == event_id) == []  # ...unsent

        first, second = launcher.start(database), launcher.start(database)
        await wait_until_ready(client, first)
        await wait_until_ready(client, second)
        placed = await events.wait_for(lambda e: e.routing_key == "order.placed", timeout=30)
        assert placed.body["event_id"] == event_id
        assert placed.message_id == event_id
        assert placed.body["order"]["id"] == stored["_id"]

        async def drained() -> bool:
            return await backlog(orders.database) == 0

        await eventually(drained, what="every event published")
        assert await orders.count_documents({}) == 1  # the redelivered place was not applied twice
        assert stored["message_id"] == message_id  # placed by the message id, in its own field
        every_copy = [e for e in events.events if e.routing_key == "order.placed"]
        assert [e.body["event_id"] for e in every_copy] == [event_id]
        # The event history has the change once too: every entry, repeats included.
        history = await read_history(client.connection)
        entries = [e for e in history if e.body.get("order", {}).get("customer_id") == customer_id]
        assert [(e.routing_key, e.body["event_id"], e.message_id) for e in entries] == [
            ("order.placed", event_id, event_id)
        ]
    finally:
        await events.stop()


async def test_mongodb_outage_is_waited_out_without_rejecting_or_spinning(
    fresh_client: AmqpClient, launcher: WorkerLauncher, private_mongo: EmbeddedMongo
) -> None:
    client = fresh_client
    database = new_database()
    launcher.mongo_url = private_mongo.url
    worker = launcher.start(database)
    await wait_until_ready(client, worker)
    events = await EventCollector.start(client.connection)
    dead = await DeadLetterReader.open(client.connection)
    customer = new_customer_id()
    keys = [f"outage-{uuid.uuid4().hex}" for _ in range(60)]
    try:

        async def produce() -> None:
            for key in keys:
                await client.publish(
                    "orders.place", {**simple_order(customer), "idempotency_key": key}
                )
                await asyncio.sleep(0.25)

        producer = asyncio.create_task(produce())
        await asyncio.sleep(2.0)
        await asyncio.to_thread(private_mongo.stop)
        cpu_before = cpu_seconds(worker.process.pid)
        await asyncio.sleep(10.0)  # the outage itself: ten seconds without MongoDB
        cpu_during = cpu_seconds(worker.process.pid) - cpu_before
        await asyncio.to_thread(private_mongo.restart)
        await producer

        placed = await events.wait_for_all(
            lambda e: (
                e.routing_key == "order.placed" and e.body["order"]["customer_id"] == customer
            ),
            len(keys),
            timeout=120,
        )
        assert len({e.body["order"]["id"] for e in placed}) == len(keys)
        assert events.matching(lambda e: e.routing_key == "order.command_rejected") == []
        await dead.drain()
        assert [letter for letter in dead.letters if customer.encode() in letter.body] == []
        assert cpu_during < 2.0, f"the worker used {cpu_during:.2f} s of CPU in a 10 s outage"
        assert worker.process.poll() is None
        stored = AsyncMongoClient[Doc](private_mongo.url)
        try:
            orders = stored[database]["orders"]
            assert await orders.count_documents({"customer_id": customer}) == len(keys)

            async def drained() -> bool:
                return await backlog(orders.database) == 0

            await eventually(drained, timeout=15, what="every event published")
        finally:
            await stored.close()
    finally:
        await dead.close()
        await events.stop()


async def test_a_poison_message_is_retried_a_bounded_number_of_times_then_dead_lettered(
    fresh_client: AmqpClient, launcher: WorkerLauncher, database_client: AsyncMongoClient[Doc]
) -> None:
    client = fresh_client
    database = new_database()
    worker = launcher.start(database, {"ORDERS_RETRY_DELAYS_MS": "[300, 600]"})
    await wait_until_ready(client, worker)
    dead = await DeadLetterReader.open(client.connection)
    # An order document damaged by hand: every handler that loads it fails.
    await database_client[database]["orders"].insert_one(
        {"_id": 999_999, "order_id": 987_654_321, "status": "pending", "version": 1}
    )
    try:
        poison = {"id": 999_999, "action": "update_status", "status": "processing"}
        silent_id = await client.publish("orders.action", poison)
        answered = asyncio.create_task(client.request("orders.action", poison, timeout=30))

        # Meanwhile the queues keep flowing.
        for _ in range(3):
            await place(client, simple_order(new_customer_id()))

        reply = await answered
        assert reply["success"] is False
        assert reply["error"]["code"] == "internal_error"
        assert "Traceback" not in json.dumps(reply)

        letter = await dead.wait_for(lambda m: m.message_id == silent_id, timeout=30)
        assert letter.headers["x-error-code"] == "internal_error"
        assert letter.headers["x-attempts"] == 3  # the first try and two retries
        assert letter.routing_key == "orders.action"
        assert json.loads(letter.body) == poison

        # A validation failure is not retried.
        invalid_id = await client.publish("orders.action", {"id": 1, "action": "complete", "x": 1})
        invalid = await dead.wait_for(lambda m: m.message_id == invalid_id, timeout=30)
        assert invalid.headers["x-error-code"] == "validation_error"
        assert invalid.headers["x-attempts"] == 1
        failures = worker.log_tail(2000).count("handler failed on orders.action (attempt")
        assert failures == 6  # two poison messages, three attempts each
    finally:
        await dead.close()


CHAIN = [
    "processing", "confirmed", "processing", "confirmed", "in_progress",
    "on_hold", "in_progress", "completed", "refunded",
]  # fmt: skip


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["kill", "term"])
async def test_two_workers_apply_each_orders_actions_in_the_order_published(
    fresh_client: AmqpClient, launcher: WorkerLauncher, stop: signal.Signals
) -> None:
    client = fresh_client
    database = new_database()
    # A small prefetch window, so that a stop often falls inside some order's chain.
    small_prefetch = {"ORDERS_PREFETCH": "5"}
    workers: list[Worker] = [
        launcher.start(database, small_prefetch),
        launcher.start(database, small_prefetch),
    ]
    for worker in workers:
        await wait_until_ready(client, worker)
    events = await EventCollector.start(client.connection)
    try:
        customer = new_customer_id()
        orders = [await place(client, simple_order(customer)) for _ in range(40)]
        # Each order's chain back to back: the steps of one order sit next to each other in
        # the queue, many of them prefetched at once.
        for number, order in enumerate(orders):
            for step, status in enumerate(CHAIN):
                # The same order, named by `id` and by `order_id` in turn: still one line.
                name = {"id": order["id"]} if step % 2 else {"order_id": order["order_id"]}
                await client.publish(
                    "orders.action", {**name, "action": "update_status", "status": status}
                )
            if number == len(orders) // 2:  # a worker stops on the way; the other takes over
                workers[0].process.send_signal(stop)

        changes = await events.wait_for_all(
            lambda e: e.routing_key == "order.status_changed" and e.body["customer_id"] == customer,
            len(orders) * len(CHAIN),
            timeout=120,
        )
        assert events.matching(lambda e: e.routing_key == "order.command_rejected") == []
        for order in orders:
            mine = sorted(
                (e.body for e in changes if e.body["id"] == order["id"]),
                key=lambda body: body["version"],
            )
            assert [body["to_status"] for body in mine] == CHAIN
            assert [body["version"] for body in mine] == list(range(2, len(CHAIN) + 2))
    finally:
        await events.stop()
