"""One message's properties cannot stop the worker.

A raw AMQP publisher (tests/raw_amqp.py) sends, on every routing key, messages whose
properties RabbitMQ accepts and a strict client cannot decode (tests/e2e/poison.py): a
timestamp past the year 9999, `message_id`, `correlation_id`, `reply_to`, `type`,
`app_id`, `content_type`, `content_encoding` or `cluster_id` that is not UTF-8, header
names that are not UTF-8 at any depth, timestamps past 9999 in the headers. Normal orders
are placed in between. Each poison message must be dead-lettered as `bad_request`, naming
the property, within 10 s, exactly once; none may be applied; every normal order must be
placed; the worker must not lose its connection even once.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiohttp
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from ..raw_amqp import RawPublisher, Tagged, table, text_properties, timestamp
from .amqp_client import AmqpClient, DeadLetter, DeadLetterReader, EventCollector, decode_object
from .contract import (
    STATUSES,
    assert_error,
    assert_success,
    get_order,
    list_orders,
    new_customer_id,
    place,
    simple_order,
)
from .poison import (
    NOT_UTF8,
    PAST_9999,
    POISON_PROPERTIES,
    UNENCODABLE_HEADERS,
    WORK_QUEUES,
    log_size,
    purge_work_queues,
    reconnects,
    work_queue_depths,
)
from .worker import Worker, stop_worker

T = Tagged
WITHIN = 10.0
"""Seconds from the last poison message published until all of them are dead-lettered."""


@pytest_asyncio.fixture(scope="module", loop_scope="session", autouse=True)
async def _no_poison_left_behind(
    worker_process: Worker, amqp_client: AmqpClient
) -> AsyncIterator[None]:
    yield
    await asyncio.to_thread(stop_worker, worker_process)
    await purge_work_queues(amqp_client.connection)


@dataclass(frozen=True)
class Poison:
    kind: str
    routing_key: str
    body: bytes
    expected: str
    """What the dead letter's `x-error-message` names, or what header it carries as text."""
    marker: str


def _valid_body(routing_key: str, marker: str, target: dict[str, Any], n: int) -> bytes:
    """A request that would succeed, were it not for its properties; the `n`th differs
    from the others by its trailing blanks."""
    bodies: dict[str, Any] = {
        "orders.place": simple_order(f"cust-poison-{marker}"),
        "orders.action": {"id": target["id"], "action": "cancel", "reason": marker},
        "orders.get": {"id": target["id"], "order_id": target["order_id"]},
        "orders.list": {"customer_id": marker},
        "orders.stats": {"customer_id": marker},
    }
    if routing_key == "orders.statuses":  # its body is {}
        return b"{" + b" " * n + b"}"
    return json.dumps(bodies[routing_key]).encode() + b" " * n  # each body differs


def _kinds() -> list[tuple[str, dict[str, bytes], str]]:
    """(kind, raw properties, the property the refusal names or the header kept as text)."""
    return [
        *((kind, props, name) for kind, (name, props) in POISON_PROPERTIES.items()),
        *(
            (kind, {"headers": table([(name, value)])}, name)
            for kind, (name, value) in UNENCODABLE_HEADERS.items()
        ),
    ]


async def test_poison_properties_are_dead_lettered_and_orders_keep_flowing(
    client: AmqpClient,
    worker: Worker,
    dead_letters: DeadLetterReader,
    events: EventCollector,
    amqp_url: str,
) -> None:
    log_start = log_size(worker.log_path)
    target = await place(client, simple_order(new_customer_id()))
    poison: list[Poison] = []
    normal: list[asyncio.Task[dict[str, Any]]] = []
    normal_customers: list[str] = []
    loop = asyncio.get_running_loop()

    async with RawPublisher(amqp_url) as raw:
        for kind, properties, expected in _kinds():
            for routing_key in WORK_QUEUES:
                customer = new_customer_id()
                normal_customers.append(customer)
                normal.append(
                    asyncio.create_task(client.request("orders.place", simple_order(customer)))
                )
                marker = uuid.uuid4().hex
                if kind in POISON_PROPERTIES:
                    body = _valid_body(routing_key, marker, target, len(poison))
                else:  # decodable; refused for its body, dead-lettered with its headers
                    body = f"not json {marker}".encode()
                assert await raw.publish(routing_key, body, properties), (
                    f"the broker refused {kind} on {routing_key}"
                )
                poison.append(Poison(kind, routing_key, body, expected, marker))
    published = loop.time()

    # Every poison message is dead-lettered once, as bad_request, within WITHIN seconds.
    letters = await _dead_letters(dead_letters, [p.body for p in poison], published + WITHIN)
    missing = [f"{p.kind} on {p.routing_key}" for p in poison if p.body not in letters]
    assert not missing, f"{len(missing)} poison message(s) not dead-lettered: {missing}"
    elapsed = loop.time() - published
    for message in poison:
        _check_dead_letter(message, letters[message.body])
    bodies = [letter.body for letter in dead_letters.letters]
    doubled = [p.kind for p in poison if bodies.count(p.body) > 1]
    assert not doubled, f"dead-lettered more than once: {doubled}"

    # Every normal order was placed; the service answers.
    replies = await asyncio.gather(*normal)
    placed = [assert_success(reply) for reply in replies]
    assert sorted(order["customer_id"] for order in placed) == sorted(normal_customers)
    assert assert_success(await client.request("orders.statuses", {})) == STATUSES
    assert (await get_order(client, placed[-1]["id"]))["customer_id"] == normal_customers[-1]

    # Nothing a poison message asked for was done; no poison waits in a work queue.
    after = await get_order(client, target["id"])
    assert (after["status"], after["version"]) == ("pending", 1)
    for message in poison:
        if message.routing_key == "orders.place" and message.kind in POISON_PROPERTIES:
            listed = await list_orders(client, customer_id=f"cust-poison-{message.marker}")
            assert listed["pagination"]["total"] == 0, message.kind
    assert await work_queue_depths(client.connection) == dict.fromkeys(WORK_QUEUES, 0)

    # Refused commands are announced, as other refusals are.
    first_place = next(
        p for p in poison if p.routing_key == "orders.place" and p.kind in POISON_PROPERTIES
    )
    await events.wait_for(
        lambda e: (
            e.routing_key == "order.command_rejected"
            and first_place.marker in json.dumps(e.body.get("payload"), default=str)
        )
    )

    # Each was logged as an error and counted.
    log = worker.log_path.read_bytes()[log_start:]
    assert log.count(b"ERROR service.worker.delivery undecodable message properties") >= len(
        [p for p in poison if p.kind in POISON_PROPERTIES]
    )
    for routing_key in WORK_QUEUES:
        counted = await _metric(
            worker, "orders_undecodable_properties_total", routing_key=routing_key
        )
        assert counted >= len(POISON_PROPERTIES), routing_key

    # And it cost no reconnect at all.
    count = reconnects(worker.log_path, log_start)
    sys.stderr.write(
        f"poison properties: {len(poison)} poison messages dead-lettered within "
        f"{elapsed:.1f}s, {len(placed)} orders placed in between, {count} reconnect(s)\n"
    )
    assert count == 0, worker.log_tail()


async def test_a_poison_message_with_a_sane_reply_to_gets_a_reply_too(
    client: AmqpClient, worker: Worker, dead_letters: DeadLetterReader, amqp_url: str
) -> None:
    channel = await client.connection.channel()
    reply_queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
    body = b"{" + b" " * 200 + b"}"
    correlation_id = uuid.uuid4().hex
    properties = {
        **text_properties(reply_to=reply_queue.name, correlation_id=correlation_id),
        "timestamp": timestamp(PAST_9999),
    }
    try:
        async with RawPublisher(amqp_url) as raw:
            assert await raw.publish("orders.statuses", body, properties)
        reply = await _first_message(reply_queue, WITHIN)
        assert reply.correlation_id == correlation_id
        error = assert_error(decode_object(reply.body), "bad_request")
        assert error["details"] == {"properties": ["timestamp"]}
    finally:
        await channel.close()
    letter = await dead_letters.wait_for(lambda letter: letter.body == body)
    _check_dead_letter(Poison("timestamp", "orders.statuses", body, "timestamp", ""), letter)


def _check_dead_letter(message: Poison, letter: DeadLetter) -> None:
    where = f"{message.kind} on {message.routing_key}: {letter.headers}"
    assert letter.routing_key == message.routing_key, where
    assert letter.headers.get("x-error-code") == "bad_request", where
    reason = letter.headers.get("x-error-message")
    assert isinstance(reason, str), where
    if message.kind in UNENCODABLE_HEADERS:
        kept = letter.headers.get(message.expected)
        if message.kind == "header text not UTF-8":  # kept byte for byte, as a byte array
            assert kept == bytearray(NOT_UTF8), where
        else:
            assert isinstance(kept, str), where  # kept, as text
        return
    assert reason.startswith("Message properties cannot be decoded"), where
    assert message.expected in reason, where
    bad = letter.headers.get("x-bad-properties")
    assert isinstance(bad, dict), where
    assert any(name.startswith(message.expected) for name in bad), where


async def _dead_letters(
    reader: DeadLetterReader, bodies: list[bytes], deadline: float
) -> dict[bytes, DeadLetter]:
    """The dead letters with these bodies that arrive before `deadline` (loop time)."""
    loop = asyncio.get_running_loop()
    wanted = set(bodies)
    while True:
        await reader.drain()
        found = {letter.body: letter for letter in reader.letters if letter.body in wanted}
        if len(found) == len(wanted) or loop.time() >= deadline:
            return found
        await asyncio.sleep(0.2)  # basic.get has no blocking form: poll interval


async def _metric(worker: Worker, name: str, **labels: str) -> float:
    """The sum of the worker's samples of `name` whose labels include `labels`."""
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        http.get(f"{worker.http_url}/metrics") as response,
    ):
        text = await response.text()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


async def _first_message(
    queue: aio_pika.abc.AbstractQueue,
    within: float,
) -> aio_pika.abc.AbstractIncomingMessage:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while (message := await queue.get(no_ack=True, fail=False)) is None:
        assert loop.time() < deadline, f"no reply within {within}s"
        await asyncio.sleep(0.1)
    return message


async def test_a_header_table_that_fills_a_frame_is_dead_lettered_without_a_reconnect(
    client: AmqpClient, worker: Worker, dead_letters: DeadLetterReader, amqp_url: str
) -> None:
    """With the service's own headers added, the dead letter's headers would not fit one
    frame: the broker closed the worker's connection on every redelivery."""
    log_start = log_size(worker.log_path)
    headers = table(
        [*((f"k{i}", T.text("v" * 1000)) for i in range(128)), ("pad", T.text("p" * 1700))]
    )
    assert len(headers) > 130_000
    body = f"not json {uuid.uuid4().hex}".encode()
    async with RawPublisher(amqp_url) as raw:
        assert await raw.publish("orders.place", body, {"headers": headers})
    letter = await dead_letters.wait_for(lambda letter: letter.body == body, timeout=WITHIN)
    assert letter.headers["x-error-code"] == "bad_request"
    assert letter.headers["x-dropped-headers"][0] == "pad (1709 bytes)"
    assert letter.headers["k0"] == "v" * 1000
    assert assert_success(await client.request("orders.statuses", {})) == STATUSES
    assert reconnects(worker.log_path, log_start) == 0
