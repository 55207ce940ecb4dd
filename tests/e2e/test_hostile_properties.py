"""Hostile AMQP properties and header tables: nothing lost, normal traffic keeps flowing.

A property-based test, the companion of test_hostile_input.py (which throws hostile
bodies): Hypothesis generates batches of messages whose properties are written byte by
byte (tests/raw_amqp.py): every short-string property as ASCII, as any Unicode, as bytes
that are not UTF-8 or as 255 bytes; timestamps from 0 to 2**64-1 (past the year 9999
above about 2.5e14); priorities and delivery modes from 0 to 255; expirations that are
numbers or not; `user_id` that is the publisher's or not; and header tables of every field
type (t b B s u I i l f d D S T F A V x), nested, with names that are not UTF-8, empty,
255 bytes long, or the service's own (`x-error-code`, `x-attempt`, `x-bad-properties`,
`x-undecodable-properties`, `x-death`). At least 2,000 messages go over the real broker,
on all six routing keys, each batch interleaved with a normal order.

Whatever the broker accepts must then be accounted for. A strict client's decoding (pamqp,
and what aio-pika takes) is the oracle:

- properties it cannot decode: dead-lettered as `bad_request`, and answered too when the
  `reply_to` was this test's queue;
- otherwise, with this test's `reply_to`: exactly one reply, a contract envelope;
- otherwise (commands without `reply_to`): a valid order is placed, an invalid body is
  dead-lettered as `bad_request`.

Every message carries a `probe` header, which is how its dead letter is found; the worker
may never reconnect, and no message may be left in a work queue. Generation is seeded: a
failure says ``HOSTILE_PROPERTIES_SEED=<n>``, which replays the same messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import struct
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest_asyncio
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue
from hypothesis import HealthCheck, Phase, Verbosity, given, seed, settings
from hypothesis import strategies as st
from pamqp import commands

from ..raw_amqp import (
    RawPublisher,
    Tagged,
    encode_properties,
    octet,
    short_string,
    table,
    timestamp,
)
from .amqp_client import AmqpClient, DeadLetter, DeadLetterReader, decode
from .contract import (
    STATUSES,
    assert_success,
    get_order,
    list_orders,
    new_customer_id,
    place,
    simple_order,
)
from .poison import WORK_QUEUES, log_size, purge_work_queues, reconnects, work_queue_depths
from .test_hostile_input import INVALID_UTF8, SPECIAL_TEXT, _weighted
from .worker import Worker, stop_worker

T = Tagged
MIN_MESSAGES = 2000
PER_BATCH = 10
BATCHES = MIN_MESSAGES * 23 // 20 // PER_BATCH  # the broker refuses about one in 25
REPLY_TIMEOUT = 10.0
DEAD_LETTER_TIMEOUT = 15.0
PROBE = "probe"
CLIENT_ERRORS = frozenset(
    {"bad_request", "validation_error", "not_found", "invalid_transition", "version_conflict"}
)


@pytest_asyncio.fixture(scope="module", loop_scope="session", autouse=True)
async def _no_poison_left_behind(
    worker_process: Worker, amqp_client: AmqpClient
) -> AsyncIterator[None]:
    yield
    await asyncio.to_thread(stop_worker, worker_process)
    await purge_work_queues(amqp_client.connection)


# --- properties as bytes -----------------------------------------------------------------

invalid_utf8 = st.builds(
    lambda head, bad, tail: head + bad + tail,
    st.binary(max_size=4).filter(lambda b: b.isascii()),
    st.sampled_from(INVALID_UTF8),
    st.binary(max_size=4).filter(lambda b: b.isascii()),
)
short_bytes = _weighted(
    (st.text(st.characters(codec="ascii"), max_size=20).map(str.encode), 4),
    (st.text(max_size=20).map(lambda s: s.encode("utf-8", "surrogatepass")), 2),
    (st.sampled_from(SPECIAL_TEXT).map(lambda s: s.encode("utf-8", "surrogatepass")), 2),
    (invalid_utf8, 3),
    (st.binary(max_size=30), 1),
    (st.sampled_from([b"", b"x" * 255, "é".encode() * 127]), 1),
)
"""What a short string holds, as bytes (lone surrogates written as the invalid bytes)."""

timestamps = _weighted(
    (st.integers(0, 2**64 - 1), 2),
    (st.integers(0, 2**32 - 1), 2),
    (st.integers(2**32, 253_402_300_799_999), 1),  # milliseconds, up to the year 9999
    (
        st.sampled_from(
            [0, 2**32 - 1, 2**32, 253_402_300_799_999, 253_402_300_800_000, 10**15, 2**63]
        ),
        2,
    ),
)
header_names = _weighted(
    (short_bytes, 6),
    (
        st.sampled_from(
            [
                "x-error-code",
                "x-error-message",
                "x-attempt",
                "x-attempts",
                "x-bad-properties",
                "x-undecodable-properties",
                "x-death",
                "x-delay",
                "",
            ]
        ).map(str.encode),
        2,
    ),
)
scalar_values = st.one_of(
    st.booleans().map(T.boolean),
    st.integers(-(2**7), 2**7 - 1).map(T.int8),
    st.integers(0, 2**8 - 1).map(T.uint8),
    st.integers(-(2**15), 2**15 - 1).map(T.int16),
    st.integers(0, 2**16 - 1).map(T.uint16),
    st.integers(-(2**31), 2**31 - 1).map(T.int32),
    st.integers(0, 2**32 - 1).map(T.uint32),
    st.integers(-(2**63), 2**63 - 1).map(T.int64),
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(T.float32),
    st.floats(allow_nan=False, allow_infinity=False).map(T.float64),
    st.tuples(st.integers(0, 255), st.integers(0, 2**32 - 1)).map(lambda v: T.decimal(*v)),
    _weighted((short_bytes, 3), (st.binary(max_size=300), 1)).map(T.text),
    timestamps.map(T.timestamp),
    st.just(T.void()),
    st.binary(max_size=40).map(T.byte_array),
)
field_values = st.recursive(
    scalar_values,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(T.array),
        st.lists(st.tuples(header_names, inner), max_size=4).map(T.table),
    ),
    max_leaves=6,
)
header_entries = st.lists(st.tuples(header_names, field_values), max_size=4)


@dataclass(frozen=True)
class Shape:
    """One message before its probe and reply queue are known."""

    routing_key: str
    reply: str  # "ours", "none" or "bad" (a reply_to that is not UTF-8)
    valid_body: bool
    properties: dict[str, bytes]
    headers: list[tuple[bytes, bytes]]
    correlation_id: bytes | None


def _optional(strategy: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes | None]:
    return _weighted((st.none(), 1), (strategy, 1))


other_properties = st.fixed_dictionaries(
    {},
    optional={
        "content_type": _weighted(
            (st.sampled_from([b"application/json", b"text/plain"]), 2), (short_bytes, 1)
        ).map(short_string),
        "content_encoding": short_bytes.map(short_string),
        "delivery_mode": _weighted((st.sampled_from([1, 2]), 6), (st.integers(0, 255), 1)).map(
            octet
        ),
        "priority": st.integers(0, 255).map(octet),
        "expiration": _weighted(
            (st.sampled_from([b"3600000", b"86400000"]), 3),
            (st.sampled_from([b"-1", b"1.5", b"soon", b" 1", b"\xff"]), 1),
        ).map(short_string),
        "message_id": short_bytes.map(short_string),
        "timestamp": timestamps.map(timestamp),
        "type": short_bytes.map(short_string),
        "user_id": st.sampled_from([b"guest", b"mallory"]).map(short_string),
        "app_id": short_bytes.map(short_string),
        "cluster_id": short_bytes.map(short_string),
    },
)
QUERIES = ("orders.get", "orders.list", "orders.stats", "orders.statuses")


@st.composite
def shapes(draw: st.DrawFn) -> Shape:
    routing_key = draw(st.sampled_from(WORK_QUEUES))
    commands_ = routing_key in ("orders.place", "orders.action")
    # Queries always ask for a reply (without one, nothing shows they were served).
    reply = draw(
        _weighted(
            (st.just("ours"), 6), (st.just("none"), 3 if commands_ else 0), (st.just("bad"), 2)
        )
    )
    correlation_id = None if reply == "ours" else draw(_optional(short_bytes))
    return Shape(
        routing_key=routing_key,
        reply=reply,
        valid_body=draw(_weighted((st.just(True), 3), (st.just(False), 1))),
        properties=draw(other_properties),
        headers=draw(header_entries),
        correlation_id=correlation_id,
    )


# --- the oracle: what a strict client decodes ----------------------------------------------


def strictly_decodable(properties: bytes) -> bool:
    """Whether pamqp decodes these properties and aio-pika builds its message from them."""
    (flags,) = struct.unpack_from(">H", properties)
    decoded = commands.Basic.Properties()
    try:
        decoded.unmarshal(flags, properties[2:])
    except (ValueError, struct.error, OverflowError, OSError):
        return False
    if decoded.delivery_mode not in (None, 0, 1, 2):
        return False
    if decoded.expiration is not None:
        try:
            float(decoded.expiration)
        except ValueError:
            return False
    return True


# --- the run -----------------------------------------------------------------------------


@dataclass
class Sent:
    shape: Shape
    probe: str
    body: bytes
    decodable: bool
    customer_id: str | None


@dataclass
class Ledger:
    published: int = 0
    refused_by_broker: int = 0
    undecodable: int = 0
    replies: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    dead_expected: dict[str, Sent] = field(default_factory=dict)
    placed_expected: list[Sent] = field(default_factory=list)
    applied_expected: list[Sent] = field(default_factory=list)  # actions without reply_to
    not_placed: list[Sent] = field(default_factory=list)


@dataclass
class Replies:
    """This test's own reply queue: each reply by correlation id; any second one kept."""

    queue: AbstractQueue
    received: dict[str, AbstractIncomingMessage] = field(default_factory=dict)
    duplicates: list[str] = field(default_factory=list)
    stray: int = 0

    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def on_reply(self, message: AbstractIncomingMessage) -> None:
        key = message.correlation_id
        if key is None:
            self.stray += 1
        elif key in self.received:
            self.duplicates.append(key)
        else:
            self.received[key] = message
            async with self.changed:
                self.changed.notify_all()

    async def wait_for(self, keys: list[str], within: float) -> None:
        """Until a reply to each of `keys` is in, or `within` seconds have passed."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within), self.changed:
                await self.changed.wait_for(lambda: all(k in self.received for k in keys))


@dataclass
class HostileRun:
    client: AmqpClient
    publisher: RawPublisher
    replies: Replies
    order: dict[str, Any]  # the order that actions update
    ledger: Ledger = field(default_factory=Ledger)

    def _body(self, shape: Shape, probe: str) -> tuple[bytes, str | None]:
        if not shape.valid_body:
            return f"not json {probe}".encode(), None
        customer_id = None
        body: dict[str, Any]
        match shape.routing_key:
            case "orders.place":
                customer_id = f"cust-{probe}"
                body = simple_order(customer_id)
            case "orders.action":
                body = {
                    "id": self.order["id"],
                    "action": "update_metadata",
                    "metadata": {probe: True},
                }
            case "orders.get":
                body = {"id": self.order["id"]}
            case "orders.list":
                body = {"customer_id": probe}
            case _:
                body = {}
        return json.dumps(body).encode(), customer_id

    async def batch(self, shapes_: list[Shape]) -> None:
        normal = asyncio.create_task(
            self.client.request("orders.place", simple_order(new_customer_id()))
        )
        waiting: list[Sent] = []
        for shape in shapes_:
            sent = await self._publish(shape)
            if sent is not None and sent.shape.reply == "ours":
                waiting.append(sent)
        assert_success(await normal)
        await self._check_replies(waiting)

    async def _publish(self, shape: Shape) -> Sent | None:
        probe = uuid.uuid4().hex
        body, customer_id = self._body(shape, probe)
        properties = dict(shape.properties)
        properties["headers"] = table([*shape.headers, (PROBE, T.text(probe))])
        if shape.reply == "ours":
            properties["reply_to"] = short_string(self.replies.queue.name)
            properties["correlation_id"] = short_string(probe)
        elif shape.reply == "bad":
            properties["reply_to"] = short_string(b"amq.gen-\xff" + probe.encode()[:8])
        if shape.correlation_id is not None:
            properties["correlation_id"] = short_string(shape.correlation_id)
        if "message_id" in properties:  # unique: the same message_id places one order only
            properties["message_id"] = short_string(
                (probe[:8].encode() + properties["message_id"][1:])[:255]
            )
        encoded = encode_properties(properties)
        sent = Sent(shape, probe, body, strictly_decodable(encoded), customer_id)
        if not await self.publisher.publish(shape.routing_key, body, properties):
            self.ledger.refused_by_broker += 1
            return None
        self._expect(sent)
        return sent

    def _expect(self, sent: Sent) -> None:
        ledger = self.ledger
        ledger.published += 1
        shape = sent.shape
        ledger.kinds[
            f"reply_to {shape.reply}, {'' if sent.decodable else 'un'}decodable, "
            f"{'valid' if shape.valid_body else 'invalid'} body"
        ] += 1
        if not sent.decodable:
            ledger.undecodable += 1
            ledger.dead_expected[sent.probe] = sent
            if sent.customer_id is not None:
                ledger.not_placed.append(sent)
        elif shape.reply == "none":
            if not shape.valid_body:
                ledger.dead_expected[sent.probe] = sent
            elif sent.customer_id is not None:
                ledger.placed_expected.append(sent)
            else:
                ledger.applied_expected.append(sent)
        elif shape.reply == "bad":  # not UTF-8: never decodable
            raise AssertionError(f"a reply_to that is not UTF-8 was decoded: {sent}")

    async def _check_replies(self, waiting: list[Sent]) -> None:
        await self.replies.wait_for([s.probe for s in waiting], REPLY_TIMEOUT)
        received = self.replies.received
        missing = [s for s in waiting if s.probe not in received]
        assert not missing, f"{len(missing)} message(s) got no reply within {REPLY_TIMEOUT}s: " + (
            "; ".join(_describe(s) for s in missing[:3])
        )
        for sent in waiting:
            reply = decode(received[sent.probe].body)
            code = _code(reply)
            self.ledger.replies += 1
            self.ledger.outcomes[f"reply {code}"] += 1
            assert code == "ok" or code in CLIENT_ERRORS, f"{code}: {_describe(sent)}"
            if not sent.decodable:
                assert code == "bad_request", f"{reply}: {_describe(sent)}"
                assert "properties cannot be decoded" in reply["message"], _describe(sent)


def _code(reply: Any) -> str:
    assert isinstance(reply, dict), reply
    assert isinstance(reply.get("success"), bool), reply
    return "ok" if reply["success"] else str(reply["error"]["code"])


def _describe(sent: Sent) -> str:
    shape = sent.shape
    return (
        f"{shape.routing_key} reply={shape.reply} decodable={sent.decodable} "
        f"body={sent.body[:80]!r} properties={shape.properties!r} headers={shape.headers!r}"
    )[:1500]


def _run_hypothesis(
    loop: asyncio.AbstractEventLoop,
    on_batch: Callable[[list[Shape]], Coroutine[Any, Any, None]],
    generation_seed: int,
) -> None:
    """Hypothesis drives the batches from this (worker) thread; each runs on ``loop``."""

    @seed(generation_seed)
    @settings(
        max_examples=BATCHES,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        verbosity=Verbosity.quiet,
        suppress_health_check=list(HealthCheck),
    )
    @given(batch=st.lists(shapes(), min_size=PER_BATCH, max_size=PER_BATCH))
    def throw(batch: list[Shape]) -> None:
        asyncio.run_coroutine_threadsafe(on_batch(batch), loop).result()

    throw()


async def test_hostile_properties_lose_nothing_and_stop_nothing(
    client: AmqpClient, worker: Worker, dead_letters: DeadLetterReader, amqp_url: str
) -> None:
    generation_seed = int(os.environ.get("HOSTILE_PROPERTIES_SEED") or secrets.randbits(32))
    sys.stderr.write(f"hostile properties: HOSTILE_PROPERTIES_SEED={generation_seed}\n")
    started = time.monotonic()
    log_start = log_size(worker.log_path)
    channel = await client.connection.channel()
    queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
    replies = Replies(queue)
    await queue.consume(replies.on_reply, no_ack=True)
    try:
        async with RawPublisher(amqp_url) as publisher:
            order = await place(client, simple_order(new_customer_id()))
            run = HostileRun(client, publisher, replies, order)
            await asyncio.to_thread(
                _run_hypothesis, asyncio.get_running_loop(), run.batch, generation_seed
            )
            await _check_the_rest(run, dead_letters)
    except BaseException as exc:
        exc.add_note(f"reproduce with HOSTILE_PROPERTIES_SEED={generation_seed}")
        raise
    finally:
        with contextlib.suppress(Exception):
            await channel.close()
    ledger = run.ledger
    count = reconnects(worker.log_path, log_start)
    sys.stderr.write(
        f"hostile properties: {ledger.published} accepted by the broker "
        f"({ledger.refused_by_broker} refused), {ledger.undecodable} undecodable by a strict "
        f"client; {ledger.replies} replies {dict(ledger.outcomes)}; "
        f"{len(ledger.dead_expected)} dead-lettered, {len(ledger.placed_expected)} placed "
        f"without reply_to; {count} reconnect(s); {time.monotonic() - started:.1f}s; "
        f"sent: {dict(ledger.kinds)}\n"
    )
    assert ledger.published >= MIN_MESSAGES, ledger
    assert ledger.undecodable > 0
    assert count == 0, worker.log_tail()
    assert worker.process.poll() is None, worker.log_tail()
    assert not replies.duplicates, replies.duplicates


async def _check_the_rest(run: HostileRun, dead_letters: DeadLetterReader) -> None:
    ledger, client = run.ledger, run.client
    # Every message that was to be dead-lettered is, once, as bad_request.
    letters = await _dead_letters(dead_letters, set(ledger.dead_expected), DEAD_LETTER_TIMEOUT)
    problems = []
    for probe, sent in ledger.dead_expected.items():
        found = letters.get(probe, [])
        if len(found) != 1:
            problems.append(f"{len(found)} dead letters for {_describe(sent)}")
        elif found[0].headers.get("x-error-code") != "bad_request" or (
            found[0].routing_key != sent.shape.routing_key
        ):
            problems.append(f"dead letter {found[0].headers} for {_describe(sent)}")
    assert not problems, f"{len(problems)} problem(s); first:\n" + "\n".join(problems[:5])

    # Valid orders without reply_to were placed; none from undecodable properties was.
    async def total(sent: Sent) -> int:
        listed = await list_orders(client, customer_id=sent.customer_id)
        return int(listed["pagination"]["total"])

    placed = await asyncio.gather(*(total(s) for s in ledger.placed_expected))
    unplaced = [_describe(s) for s, n in zip(ledger.placed_expected, placed, strict=True) if n != 1]
    assert not unplaced, f"{len(unplaced)} valid order(s) not placed; first: {unplaced[:3]}"
    wrongly = await asyncio.gather(*(total(s) for s in ledger.not_placed))
    assert not any(wrongly), "an order with undecodable properties was placed"

    # Valid actions without reply_to were applied (each adds its probe to the metadata);
    # none with undecodable properties was.
    metadata = (await get_order(client, run.order["id"]))["metadata"]
    unapplied = [_describe(s) for s in ledger.applied_expected if s.probe not in metadata]
    assert not unapplied, f"{len(unapplied)} valid action(s) not applied; first: {unapplied[:3]}"
    refused_actions = [
        s.probe
        for s in ledger.dead_expected.values()
        if s.shape.routing_key == "orders.action" and s.probe in metadata
    ]
    assert not refused_actions, f"dead-lettered actions were applied: {refused_actions}"

    # The service still answers, and nothing waits in a work queue.
    assert assert_success(await client.request("orders.statuses", {})) == STATUSES
    assert await work_queue_depths(client.connection) == dict.fromkeys(WORK_QUEUES, 0)


async def _dead_letters(
    reader: DeadLetterReader, probes: set[str], within: float
) -> dict[str, list[DeadLetter]]:
    """The dead letters with these probes, by probe, once all arrived or `within` passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        await reader.drain()
        found: dict[str, list[DeadLetter]] = {}
        for letter in reader.letters:
            probe = letter.headers.get(PROBE)
            if isinstance(probe, str) and probe in probes:
                found.setdefault(probe, []).append(letter)
        if len(found) == len(probes) or loop.time() >= deadline:
            return found
        await asyncio.sleep(0.2)  # basic.get has no blocking form: poll interval
