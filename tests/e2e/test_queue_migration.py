"""Upgrading from classic queues: the worker refuses them with one clear error, and
`make migrate-queues` (service/migrate_queues.py) moves every waiting message into the
quorum queues, in order, while a producer keeps publishing; a worker then serves them.

Each test has a vhost of its own holding the topology as the previous version declared it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aio_pika
import pytest
import pytest_asyncio
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from pamqp.common import FieldTable

from devtools import rabbitmq
from devtools.embedded_mongo import free_port
from service.app import EXIT_STALE_QUEUES
from service.config import Settings
from service.migrate_queues import SUFFIX, migrate

from .amqp_client import AmqpClient, encode
from .contract import assert_success, list_orders, new_customer_id, simple_order
from .worker import start_worker, stop_worker, wait_for_exit, wait_until_ready

DELAYS_MS = (60_000,)
"""One delay queue whose messages stay put for the whole test."""
PRELOADED = 300
"""Messages waiting in each queue before the migration."""
PLACES = 40
DELAY_QUEUE = "orders.retry.1.60000ms"
WORKER_ENV = {"ORDERS_RETRY_DELAYS_MS": "[60000]"}
EXIT_TIMEOUT = 60.0
QUORUM: FieldTable = {"x-queue-type": "quorum"}


@pytest.fixture
def legacy_url() -> Iterator[str]:
    with rabbitmq.scratch_vhost("orders-legacy") as url:
        yield url


@pytest_asyncio.fixture(loop_scope="session")
async def channel(legacy_url: str) -> AsyncIterator[AbstractChannel]:
    connection = await aio_pika.connect(legacy_url)
    async with connection:
        yield await connection.channel()


async def declare_previous_version(channel: AbstractChannel) -> None:
    """The topology as the version before quorum queues declared it: classic queues."""
    for exchange in ("orders", "orders.events", "orders.dlx", "orders.retry", "orders.requeue"):
        await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
    classic: FieldTable = {"x-queue-type": "classic"}
    dead = await channel.declare_queue("orders.dead", durable=True, arguments=classic)
    await dead.bind("orders.dlx", "#")
    delay = await channel.declare_queue(
        DELAY_QUEUE,
        durable=True,
        arguments={
            **classic,
            "x-message-ttl": DELAYS_MS[0],
            "x-dead-letter-exchange": "orders.requeue",
        },
    )
    await delay.bind("orders.retry", "r1_60000ms.#")
    for key in ("orders.place", "orders.action", "orders.get", "orders.list"):
        arguments: FieldTable = {**classic, "x-dead-letter-exchange": "orders.dlx"}
        if key == "orders.action":
            arguments["x-single-active-consumer"] = True
        queue = await channel.declare_queue(key, durable=True, arguments=arguments)
        await queue.bind("orders", key)
        await queue.bind("orders.requeue", f"*.{key}")


def message(message_id: str, body: bytes = b"{}") -> aio_pika.Message:
    return aio_pika.Message(
        body,
        message_id=message_id,
        correlation_id=f"c-{message_id}",
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        headers={"x-death": [{"queue": "orders.place", "reason": "rejected", "count": 1}]}
        if message_id.startswith("dead")
        else {"kept": message_id},
    )


async def preload(channel: AbstractChannel, customer_id: str) -> None:
    """PRELOADED messages in orders.action, orders.dead and the delay queue (by name), and
    PLACES valid orders in orders.place."""
    exchange = channel.default_exchange
    for queue, prefix in (("orders.action", "a"), ("orders.dead", "dead"), (DELAY_QUEUE, "d")):
        for n in range(PRELOADED):
            await exchange.publish(message(f"{prefix}-{n:05}"), queue)
    for n in range(PLACES):
        body = aio_pika.Message(
            encode(simple_order(customer_id)),
            message_id=f"place-{n}",
            content_type="application/json",
        )
        await exchange.publish(body, "orders.place")


async def keep_publishing(
    url: str, sent: list[str], reconnects: list[str], stop: asyncio.Event
) -> None:
    """Actions on `orders`, with confirms, as a producer does, until `stop` is set. A
    connection RabbitMQ closes (RabbitMQ 3.10 may close one that published to a classic
    queue and then to its quorum replacement) is opened again and the unconfirmed message
    sent again."""
    n = 0
    while not stop.is_set():
        try:
            async with await aio_pika.connect(url) as connection:
                channel = await connection.channel()
                exchange = await channel.get_exchange("orders", ensure=False)
                while not stop.is_set():
                    message_id = f"live-{n:05}"
                    await exchange.publish(message(message_id), "orders.action")
                    sent.append(message_id)
                    n += 1
                    await asyncio.sleep(0.003)
        except Exception as exc:
            reconnects.append(f"live-{n:05}: {type(exc).__name__}")


async def drain(channel: AbstractChannel, name: str) -> list[AbstractIncomingMessage]:
    """Everything in queue `name`, taken by a consumer (quorum queues with a single active
    consumer refuse basic.get), until none came for a second."""
    queue = await channel.get_queue(name)
    arrived: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
    tag = await queue.consume(arrived.put, no_ack=True)
    taken = []
    try:
        while True:
            taken.append(await asyncio.wait_for(arrived.get(), 1.0))
    except TimeoutError:
        return taken
    finally:
        await queue.cancel(tag)


def queue_types(url: str) -> dict[str, str]:
    vhost = url.rsplit("/", 1)[1].replace("%2F", "/")
    rows = rabbitmq._listing("list_queues", "-p", vhost, "name", "type")
    return {row["name"]: row["type"] for row in rows}


def ordered_once(ids: list[str]) -> list[str]:
    """`ids` with each one's first copy only."""
    return list(dict.fromkeys(ids))


def displaced(ids: list[str]) -> int:
    """How many of `ids` are not in their sorted place: len - longest increasing run."""
    import bisect

    tails: list[str] = []
    for value in ids:
        at = bisect.bisect_left(tails, value)
        tails[at : at + 1] = [value]
    return len(ids) - len(tails)


async def test_a_worker_refuses_classic_queues_and_says_what_to_do(
    legacy_url: str, mongo_url: str, channel: AbstractChannel, tmp_path: Path
) -> None:
    await declare_previous_version(channel)
    log_path = tmp_path / "worker.log"
    worker = start_worker(legacy_url, mongo_url, f"e2e_{uuid.uuid4().hex[:12]}", log_path)
    try:
        code = await wait_for_exit(worker, EXIT_TIMEOUT)
    finally:
        stop_worker(worker)
    text = log_path.read_text(errors="replace")
    assert code == EXIT_STALE_QUEUES, text
    errors = [line for line in text.splitlines() if " ERROR " in line]
    assert len(errors) == 1, text
    for name in ("orders.dead", "orders.place", "orders.action", "orders.get", "orders.list"):
        assert name in errors[0]
    assert "inequivalent arg 'x-queue-type'" in errors[0]
    assert "make migrate-queues" in errors[0]
    assert "Traceback" not in text


async def test_migration_moves_every_message_in_order_while_producers_publish(
    legacy_url: str, mongo_url: str, channel: AbstractChannel, tmp_path: Path
) -> None:
    await declare_previous_version(channel)
    customer_id = new_customer_id()
    await preload(channel, customer_id)
    settings = Settings(amqp_url=legacy_url, retry_delays_ms=DELAYS_MS)

    assert await migrate(settings, dry_run=True) == 0
    assert set(queue_types(legacy_url).values()) == {"classic"}  # a dry run changes nothing

    sent: list[str] = []
    reconnects: list[str] = []
    stop = asyncio.Event()
    producer = asyncio.create_task(keep_publishing(legacy_url, sent, reconnects, stop))
    try:
        await asyncio.sleep(0.3)
        assert await migrate(settings) == 0
        await asyncio.sleep(0.3)
    finally:
        stop.set()
        await asyncio.wait_for(producer, 10)
    assert len(sent) > 50

    types = queue_types(legacy_url)
    assert not [name for name in types if name.endswith(SUFFIX)]
    assert {types[name] for name in ("orders.dead", DELAY_QUEUE, "orders.action")} == {"quorum"}
    assert await migrate(settings) == 0  # nothing left to do

    # orders.dead and the delay queue: every message once, in order, properties kept.
    for name, prefix in (("orders.dead", "dead"), (DELAY_QUEUE, "d")):
        taken = await drain(channel, name)
        assert [m.message_id for m in taken] == [f"{prefix}-{n:05}" for n in range(PRELOADED)]
        first = taken[0]
        assert (first.correlation_id, first.content_type) == (
            f"c-{prefix}-00000",
            "application/json",
        )
        assert first.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        if prefix == "dead":
            deaths = first.headers["x-death"]
            assert isinstance(deaths, list)
            assert isinstance(deaths[0], dict)
            assert deaths[0]["reason"] == "rejected"

    # orders.action: the waiting ones first, in order, then the live ones; a live one may
    # arrive twice (published while both queues of a switch were bound), and one published
    # in the instant of a switch may arrive behind the next few.
    ids = [m.message_id or "" for m in await drain(channel, "orders.action")]
    once = ordered_once(ids)
    assert once[:PRELOADED] == [f"a-{n:05}" for n in range(PRELOADED)]
    live = once[PRELOADED:]
    missing, extra = set(sent) - set(live), set(live) - set(sent)
    assert (missing, extra) == (set(), set()), reconnects  # every live one, none lost
    assert len(live) == len(sent)
    copies = Counter(ids)
    doubled = [i for i, count in copies.items() if count > 1]
    assert all(i.startswith("live-") for i in doubled)
    assert len(doubled) <= 10, doubled
    assert displaced(once[PRELOADED:]) <= 10, once[PRELOADED:]
    print(  # noqa: T201 - the figures, for the record
        f"live {len(sent)}, doubled {len(doubled)}, displaced {displaced(once[PRELOADED:])}, "
        f"producer reconnects {reconnects}"
    )

    # A worker starts on the quorum queues and places the waiting orders.
    log_path = tmp_path / "worker.log"
    worker = start_worker(
        legacy_url, mongo_url, f"e2e_{uuid.uuid4().hex[:12]}", log_path, WORKER_ENV
    )
    client = await AmqpClient.connect(legacy_url)
    try:
        await wait_until_ready(client, worker)
        async with asyncio.timeout(30):
            while True:
                listed = await list_orders(client, customer_id=customer_id, per_page=100)
                if len(assert_success(listed)) >= PLACES:
                    break
                await asyncio.sleep(0.2)
        assert len(assert_success(listed)) == PLACES
    finally:
        await client.close()
        stop_worker(worker)


async def test_a_run_stopped_midway_is_finished_by_the_next(
    legacy_url: str, channel: AbstractChannel
) -> None:
    # Stopped while moving orders.dead: its first messages are in orders.dead.migrating.
    await declare_previous_version(channel)
    await channel.declare_queue("orders.dead" + SUFFIX, durable=True, arguments=QUORUM)
    for n in range(100):
        queue = "orders.dead" + SUFFIX if n < 40 else "orders.dead"
        await channel.default_exchange.publish(message(f"dead-{n:05}"), queue)
    settings = Settings(amqp_url=legacy_url, retry_delays_ms=DELAYS_MS)

    assert await migrate(settings) == 0

    types = queue_types(legacy_url)
    assert types["orders.dead"] == "quorum"
    assert "orders.dead" + SUFFIX not in types
    taken = await drain(channel, "orders.dead")
    assert [m.message_id for m in taken] == [f"dead-{n:05}" for n in range(100)]


async def test_the_gateway_refuses_them_too(
    legacy_url: str, mongo_url: str, channel: AbstractChannel
) -> None:
    await declare_previous_version(channel)
    env = {
        **os.environ,
        "ORDERS_AMQP_URL": legacy_url,
        "ORDERS_MONGO_URL": mongo_url,
        "ORDERS_API_PORT": str(free_port()),
    }
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "service.gateway"],
        env=env,
        capture_output=True,
        text=True,
        timeout=EXIT_TIMEOUT,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == EXIT_STALE_QUEUES, output
    assert "make migrate-queues" in output
    assert "orders.action" in output
    assert "Traceback" not in output
