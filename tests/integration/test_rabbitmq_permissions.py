"""The least-privilege users of `deploy/rabbitmq/definitions.json`, tried on the real broker.

The committed file is rendered as the compose stack renders it (password hashes from the
environment and an administrator, `deploy/rabbitmq/render_definitions.py`), imported with
`rabbitmqctl import_definitions` into a vhost of its own, its users renamed with a random
suffix (users are node-wide), and each role is checked for what it must be able to do and for
what it must be refused: the consumer reads the event history but cannot delete it, and nobody
can purge it (RabbitMQ 3.10 does not implement purge on a stream). Everything is deleted
afterwards.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage
from aiormq.exceptions import (
    ChannelAccessRefused,
    ConnectionNotImplemented,
    ProbableAuthenticationError,
)
from faststream.rabbit import ExchangeType, RabbitBroker, RabbitExchange, RabbitQueue

from deploy.rabbitmq.render_definitions import (
    ADMIN_PASSWORD,
    DEFAULT_ADMIN,
    password_variable,
    render,
)
from devtools import rabbitmq
from service.config import Settings
from service.topology import COMMANDS, PLACE, QUERIES, STATUSES, Topology, topology

DEFINITIONS = Path(__file__).resolve().parents[2] / "deploy" / "rabbitmq" / "definitions.json"
WORKER, PRODUCER, CONSUMER = "orders-worker", "orders-producer", "orders-consumer"
ROLES = (WORKER, PRODUCER, CONSUMER)
ADMIN = DEFAULT_ADMIN
IMPORT_TIMEOUT = 30.0
REPLY_TIMEOUT = 10.0

Action = Callable[[AbstractChannel], Awaitable[object]]


@dataclass(frozen=True)
class Deployment:
    vhost: str
    users: dict[str, str]
    """Role (the name in the file) -> the user created for this run."""
    passwords: dict[str, str]

    def url(self, role: str) -> str:
        return (
            f"amqp://{self.users[role]}:{self.passwords[role]}@"
            f"{rabbitmq.DEFAULT_HOST}:{rabbitmq.DEFAULT_PORT}/{quote(self.vhost, safe='')}"
        )


def _renamed(definitions: dict[str, Any], vhost: str, users: dict[str, str]) -> dict[str, Any]:
    """The file with vhost `/` replaced by `vhost` and every user by its run-specific name."""
    renamed = copy.deepcopy(definitions)
    renamed["vhosts"] = [{"name": vhost}]
    for user in renamed["users"]:
        user["name"] = users[user["name"]]
    for section in ("permissions", "topic_permissions", "exchanges", "queues", "bindings"):
        for item in renamed[section]:
            item["vhost"] = vhost
            if "user" in item:
                item["user"] = users[item["user"]]
    return renamed


def _wait_for_import(renamed: dict[str, Any], vhost: str) -> None:
    """The import runs asynchronously; bindings are applied last."""
    expected = sorted(
        ({k: v for k, v in item.items() if k != "vhost"} for item in renamed["permissions"]),
        key=lambda row: row["user"],
    )
    deadline = time.monotonic() + IMPORT_TIMEOUT
    while True:
        try:
            permissions = sorted(rabbitmq.list_permissions(vhost), key=lambda row: row["user"])
            bound = {
                (row["source_name"], row["destination_name"], row["routing_key"])
                for row in rabbitmq.list_bindings(vhost)
            }
        except rabbitmq.RabbitMQError:
            permissions, bound = [], set()
        wanted = {(b["source"], b["destination"], b["routing_key"]) for b in renamed["bindings"]}
        if permissions == expected and wanted <= bound:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"definitions not imported into {vhost} within {IMPORT_TIMEOUT}s")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def definitions() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DEFINITIONS.read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def deployment(
    definitions: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    rabbitmq.ensure_running()
    suffix = uuid.uuid4().hex[:8]
    vhost = f"orders-defs-check-{suffix}"
    users = {role: f"{role}-{suffix}" for role in (*ROLES, ADMIN)}
    passwords = {role: secrets.token_urlsafe(18) for role in (*ROLES, ADMIN)}
    env = {password_variable(role): passwords[role] for role in ROLES}
    renamed = _renamed(render(definitions, env | {ADMIN_PASSWORD: passwords[ADMIN]}), vhost, users)
    path = tmp_path_factory.mktemp("rabbitmq") / "definitions.json"
    path.write_text(json.dumps(renamed), encoding="utf-8")
    try:
        rabbitmq.import_definitions(path)
        _wait_for_import(renamed, vhost)
        yield Deployment(vhost, users, passwords)
    finally:
        for user in users.values():
            rabbitmq.delete_user(user)
        rabbitmq.delete_vhost(vhost)


def _names() -> Topology:
    """The worker's topology under the default names the definitions file is written for."""
    return topology(
        Settings(
            exchange="orders",
            events_exchange="orders.events",
            dead_letter_exchange="orders.dlx",
            dead_letter_queue="orders.dead",
        )
    )


async def _declare_like_the_worker(broker: RabbitBroker, names: Topology) -> None:
    for exchange in (names.commands, names.events, names.dead_letters):
        await broker.declare_exchange(exchange)
    dead = await broker.declare_queue(names.dead_letter_queue)
    await dead.bind(names.dead_letters.name, routing_key="#")
    for routing_key in COMMANDS + QUERIES:
        queue = await broker.declare_queue(names.queue(routing_key))
        await queue.bind(names.commands.name, routing_key=routing_key)
    # A retry round: more `orders.*` exchanges, and a delay queue dead-lettering into one.
    retry = await broker.declare_exchange(RabbitExchange("orders.retry", ExchangeType.TOPIC))
    await broker.declare_exchange(RabbitExchange("orders.requeue", ExchangeType.TOPIC))
    delay_queue = names.delay_queues()[0]  # orders.retry.1.1000ms, a quorum queue
    delay = await broker.declare_queue(delay_queue)
    await delay.bind(retry, routing_key=delay_queue.routing())
    history = await broker.declare_queue(names.history)  # the stream, as the file has it
    await history.bind(names.events.name, routing_key="#")


@pytest.fixture(scope="module")
async def responder(deployment: Deployment) -> AsyncIterator[None]:
    """A stand-in worker, as `orders-worker`: declares the topology and answers requests."""
    names = _names()
    broker = RabbitBroker(deployment.url(WORKER), log_level=logging.DEBUG)

    @broker.subscriber(names.queue(PLACE), names.commands)
    async def place(body: dict[str, Any]) -> dict[str, Any]:
        return {"success": True, "data": {"answered": PLACE}}

    @broker.subscriber(names.queue(STATUSES), names.commands)
    async def statuses(body: dict[str, Any]) -> dict[str, Any]:
        return {"success": True, "data": {"answered": STATUSES}}

    async with broker:
        await _declare_like_the_worker(broker, names)
        await broker.start()
        yield


@pytest.fixture
async def producer(deployment: Deployment) -> AsyncIterator[AbstractConnection]:
    async with await aio_pika.connect(deployment.url(PRODUCER)) as connection:
        yield connection


@pytest.fixture
async def consumer(deployment: Deployment) -> AsyncIterator[AbstractConnection]:
    async with await aio_pika.connect(deployment.url(CONSUMER)) as connection:
        yield connection


async def _refusal(connection: AbstractConnection, action: Action) -> str:
    """Run `action` on a fresh channel (publisher confirms on) and return the refusal."""
    channel = await connection.channel()
    with pytest.raises(ChannelAccessRefused) as refused:
        await action(channel)
    return str(refused.value)


def _publish(exchange: str, routing_key: str) -> Action:
    async def publish(channel: AbstractChannel) -> object:
        target = (
            channel.default_exchange if exchange == "" else await channel.get_exchange(exchange)
        )
        return await target.publish(aio_pika.Message(b"{}"), routing_key=routing_key)

    return publish


def _declare_exchange(name: str) -> Action:
    async def declare(channel: AbstractChannel) -> object:
        return await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)

    return declare


def _declare_queue(name: str) -> Action:
    async def declare(channel: AbstractChannel) -> object:
        return await channel.declare_queue(name, auto_delete=True)

    return declare


def _bind(queue: str | None, exchange: str) -> Action:
    """Bind a queue (`None`: a server-named one) to `exchange`."""

    async def bind(channel: AbstractChannel) -> object:
        declared = await channel.declare_queue(queue, exclusive=queue is None, auto_delete=True)
        return await declared.bind(exchange, routing_key="#")

    return bind


def _get(queue: str) -> Action:
    async def get(channel: AbstractChannel) -> object:
        declared = await channel.get_queue(queue)  # passive: needs no permission
        return await declared.get(fail=False)

    return get


def test_the_file_is_for_vhost_slash_and_three_users_without_passwords(
    definitions: dict[str, Any],
) -> None:
    sections = ("permissions", "topic_permissions", "exchanges", "queues", "bindings")
    assert definitions["vhosts"] == [{"name": "/"}]
    assert {item["vhost"] for section in sections for item in definitions[section]} == {"/"}
    assert sorted(user["name"] for user in definitions["users"]) == sorted(ROLES)
    assert {user["password_hash"] for user in definitions["users"]} == {""}


@pytest.mark.parametrize("role", [*ROLES, ADMIN])
async def test_each_user_logs_in_with_the_password_its_hash_was_rendered_from(
    deployment: Deployment, role: str
) -> None:
    async with await aio_pika.connect(deployment.url(role)) as connection:
        assert not connection.is_closed
    wrong = Deployment(deployment.vhost, deployment.users, {role: "not-the-password"})
    with pytest.raises(ProbableAuthenticationError):
        await aio_pika.connect(wrong.url(role))


async def test_the_worker_declares_its_topology_and_publishes(deployment: Deployment) -> None:
    names = _names()
    async with RabbitBroker(deployment.url(WORKER), log_level=logging.DEBUG) as broker:
        await _declare_like_the_worker(broker, names)  # equal to what the file declared
        await broker.publish(b"{}", exchange=names.events, routing_key="order.placed")
        await broker.publish(b"dead", exchange=names.dead_letters, routing_key=PLACE)
        dead = await broker.declare_queue(names.dead_letter_queue)
        kept = await dead.get(no_ack=True, fail=False)
    assert kept is not None
    assert kept.body == b"dead"  # the file's orders.dlx -> orders.dead binding routes it


async def test_the_worker_cannot_touch_other_queues(deployment: Deployment) -> None:
    async with await aio_pika.connect(deployment.url(WORKER)) as worker:
        refusal = await _refusal(worker, _declare_queue("fulfilment.orders"))
    assert "fulfilment.orders" in refusal


async def test_the_producer_requests_with_direct_reply_to(
    deployment: Deployment, responder: None
) -> None:
    orders = RabbitExchange("orders", type=ExchangeType.TOPIC, durable=True, declare=False)
    async with RabbitBroker(deployment.url(PRODUCER), log_level=logging.DEBUG) as broker:
        for routing_key in (PLACE, STATUSES):
            response = await broker.request(
                {}, exchange=orders, routing_key=routing_key, timeout=REPLY_TIMEOUT
            )
            assert await response.decode() == {"success": True, "data": {"answered": routing_key}}


async def test_the_producer_reads_replies_from_its_own_queue(
    producer: AbstractConnection, responder: None
) -> None:
    channel = await producer.channel()
    replies = await channel.declare_queue(exclusive=True)
    assert replies.name.startswith("amq.gen-")
    correlation_id = str(uuid.uuid4())
    orders = await channel.get_exchange("orders")
    await orders.publish(
        aio_pika.Message(b"{}", correlation_id=correlation_id, reply_to=replies.name),
        routing_key=PLACE,
    )
    async with replies.iterator(timeout=REPLY_TIMEOUT) as messages:
        reply = await anext(messages)
    assert reply.correlation_id == correlation_id
    assert json.loads(reply.body) == {"success": True, "data": {"answered": PLACE}}


@pytest.mark.parametrize(
    ("action", "refused"),
    [
        pytest.param(_publish("orders", "orders.evil"), "topic 'orders.evil'", id="other-key"),
        pytest.param(_publish("orders.events", "order.placed"), "orders.events", id="events"),
        pytest.param(_publish("orders.dlx", PLACE), "orders.dlx", id="dead-letters"),
        pytest.param(_publish("", PLACE), "amq.default", id="straight-to-a-queue"),
        pytest.param(_declare_exchange("orders"), "exchange 'orders'", id="declare-exchange"),
        pytest.param(_declare_queue("orders.snoop"), "orders.snoop", id="declare-queue"),
        pytest.param(_get(PLACE), PLACE, id="read-commands"),
        pytest.param(_bind(None, "orders"), "queue 'amq.gen-", id="bind-to-orders"),
    ],
)
async def test_the_producer_is_refused_everything_else(
    producer: AbstractConnection, responder: None, action: Action, refused: str
) -> None:
    refusal = await _refusal(producer, action)
    assert "ACCESS_REFUSED" in refusal
    assert refused in refusal


async def test_the_consumer_receives_events_in_its_own_queue(
    deployment: Deployment, responder: None
) -> None:
    received: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
    events = RabbitExchange("orders.events", type=ExchangeType.TOPIC, durable=True, declare=False)
    queue = RabbitQueue(
        f"fulfilment.check-{uuid.uuid4().hex[:8]}", auto_delete=True, routing_key="order.*"
    )
    consumer_broker = RabbitBroker(deployment.url(CONSUMER), log_level=logging.DEBUG)

    @consumer_broker.subscriber(queue, events)
    async def on_event(body: dict[str, Any]) -> None:
        if not received.done():
            received.set_result(body)

    async with consumer_broker:
        await consumer_broker.start()
        async with RabbitBroker(deployment.url(WORKER), log_level=logging.DEBUG) as worker:
            await worker.publish(
                {"event_type": "order.placed"}, exchange=events, routing_key="order.placed"
            )
        assert await asyncio.wait_for(received, REPLY_TIMEOUT) == {"event_type": "order.placed"}


@pytest.mark.parametrize(
    ("action", "refused"),
    [
        pytest.param(_publish("orders", PLACE), "exchange 'orders'", id="commands"),
        pytest.param(_publish("orders.events", "order.placed"), "orders.events", id="events"),
        pytest.param(_publish("", PLACE), "amq.default", id="straight-to-a-queue"),
        pytest.param(_get("orders.dead"), "orders.dead", id="read-dead-letters"),
        pytest.param(_bind("fulfilment.snoop", "orders"), "exchange 'orders'", id="bind-orders"),
        pytest.param(_declare_queue("orders.fake"), "orders.fake", id="declare-orders-queue"),
    ],
)
async def test_the_consumer_is_refused_everything_else(
    consumer: AbstractConnection, responder: None, action: Action, refused: str
) -> None:
    refusal = await _refusal(consumer, action)
    assert "ACCESS_REFUSED" in refusal
    assert refused in refusal


HISTORY = "orders.events.history"


async def _publish_event(deployment: Deployment, body: dict[str, Any]) -> None:
    """An event published as the worker publishes them (to orders.events, with confirms)."""
    events = RabbitExchange("orders.events", type=ExchangeType.TOPIC, durable=True, declare=False)
    async with RabbitBroker(deployment.url(WORKER), log_level=logging.DEBUG) as worker:
        await worker.publish(body, exchange=events, routing_key="order.placed")


async def _history_holds(connection: AbstractConnection, marker: str) -> bool:
    """Read the history from its first event (prefetch and manual acks, as a stream needs)
    until the event carrying `marker`; False when it is not there within the timeout."""
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=100)
    stream = await channel.get_queue(HISTORY, ensure=False)
    arrived: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
    await stream.consume(arrived.put, arguments={"x-stream-offset": "first"})
    try:
        async with asyncio.timeout(REPLY_TIMEOUT):
            while True:
                message = await arrived.get()
                await message.ack()
                if json.loads(message.body).get("marker") == marker:
                    return True
    except TimeoutError:
        return False
    finally:
        await channel.close()


async def test_the_consumer_reads_the_event_history_from_its_first_event(
    deployment: Deployment, consumer: AbstractConnection, responder: None
) -> None:
    marker = uuid.uuid4().hex
    await _publish_event(deployment, {"event_type": "order.placed", "marker": marker})
    assert await _history_holds(consumer, marker)


async def test_the_consumer_cannot_delete_the_event_history(
    consumer: AbstractConnection, responder: None
) -> None:
    async def delete(channel: AbstractChannel) -> object:
        return await channel.queue_delete(HISTORY)

    refusal = await _refusal(consumer, delete)
    assert "ACCESS_REFUSED" in refusal
    assert HISTORY in refusal


async def test_nobody_can_purge_the_event_history(deployment: Deployment, responder: None) -> None:
    marker = uuid.uuid4().hex
    await _publish_event(deployment, {"event_type": "order.placed", "marker": marker})
    connection = await aio_pika.connect(deployment.url(CONSUMER))
    try:
        stream = await (await connection.channel()).get_queue(HISTORY, ensure=False)
        with pytest.raises(ConnectionNotImplemented, match="not supported by stream"):
            await stream.purge()
    finally:
        if not connection.is_closed:
            await connection.close()
    async with await aio_pika.connect(deployment.url(CONSUMER)) as again:
        assert await _history_holds(again, marker)  # every event is still there
