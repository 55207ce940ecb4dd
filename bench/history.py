"""The publish cost the event history adds, per event, measured in one run with and without it.

The same events (the documented example order as an `order.placed` body, ~1.4 KB) are
published as the outbox relay publishes them, persistent with publisher confirms, to two
topic exchanges of their own: one bound to a quorum queue only (a downstream team's queue),
the other bound to such a queue and to a stream declared as the history is
(`service.topology.stream_queue`, default retention). Two ways each:

- one at a time, each confirm awaited before the next (the latency an event pays);
- a burst: `BURST` publishes in flight at once (the relay's `publish_new` gathers a batch).

The variants alternate within each round (which goes first alternates too), so drift of a
shared machine falls on both; the figures are medians over the rounds, in microseconds per
event. Nothing here runs a worker: this is the broker's cost of the extra binding.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Sequence
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange

from bench.amqp import EXAMPLE_ORDER, JSON, encode
from service.config import Settings
from service.topology import stream_queue

BURST = 1000
"""Publishes in flight at once in the burst rounds."""
ROUNDS = 3
PREFIX = "bench.history"


def _event_body() -> bytes:
    return encode(
        {
            "event_id": str(uuid.uuid4()),
            "event_type": "order.placed",
            "occurred_at": "2026-12-06T18:00:00.000000Z",
            "order": {**EXAMPLE_ORDER, "id": 1, "order_id": 421409, "version": 1},
        }
    )


async def _exchange(channel: AbstractChannel, name: str, *, with_stream: bool) -> AbstractExchange:
    exchange = await channel.declare_exchange(
        f"{PREFIX}.{name}", aio_pika.ExchangeType.TOPIC, durable=True
    )
    downstream = await channel.declare_queue(
        f"{PREFIX}.{name}.downstream", durable=True, arguments={"x-queue-type": "quorum"}
    )
    await downstream.bind(exchange, "#")
    if with_stream:
        history = stream_queue(
            f"{PREFIX}.{name}.stream",
            max_age=Settings().history_max_age,
            max_bytes=Settings().history_max_bytes,
            segment_bytes=Settings().history_segment_bytes,
        )
        stream = await channel.declare_queue(
            history.name, durable=True, arguments=dict(history.arguments or {})
        )
        await stream.bind(exchange, "#")
    return exchange


def _message(body: bytes) -> aio_pika.Message:
    return aio_pika.Message(
        body,
        content_type=JSON,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=uuid.uuid4().hex,
    )


async def _one_at_a_time(exchange: AbstractExchange, bodies: Sequence[bytes]) -> float:
    started = time.perf_counter()
    for body in bodies:
        await exchange.publish(_message(body), routing_key="order.placed")
    return time.perf_counter() - started


async def _burst(exchange: AbstractExchange, bodies: Sequence[bytes]) -> float:
    started = time.perf_counter()
    for first in range(0, len(bodies), BURST):
        await asyncio.gather(
            *(
                exchange.publish(_message(body), routing_key="order.placed")
                for body in bodies[first : first + BURST]
            )
        )
    return time.perf_counter() - started


async def history_cost(
    connection: AbstractConnection, *, sequential: int, burst: int, rounds: int = ROUNDS
) -> dict[str, Any]:
    """Microseconds per event without and with the history stream bound, and the difference,
    one at a time (`sequential` events a round) and in bursts (`burst` events a round)."""
    channel = await connection.channel(publisher_confirms=True)
    try:
        exchanges = {
            "without": await _exchange(channel, "without", with_stream=False),
            "with": await _exchange(channel, "with", with_stream=True),
        }
        body = _event_body()
        times: dict[tuple[str, str], list[float]] = {}
        for number in range(rounds):
            order = ("without", "with") if number % 2 == 0 else ("with", "without")
            for variant in order:
                seconds = await _one_at_a_time(exchanges[variant], [body] * sequential)
                times.setdefault(("one", variant), []).append(seconds / sequential)
                seconds = await _burst(exchanges[variant], [body] * burst)
                times.setdefault(("burst", variant), []).append(seconds / burst)
            for variant in exchanges:
                await (await channel.get_queue(f"{PREFIX}.{variant}.downstream")).purge()
    finally:
        for variant in ("without", "with"):
            for suffix in ("downstream", "stream"):
                await channel.queue_delete(f"{PREFIX}.{variant}.{suffix}")
            await channel.exchange_delete(f"{PREFIX}.{variant}")
        await channel.close()
    result: dict[str, Any] = {
        "history_bench": {"sequential": sequential, "burst": burst, "rounds": rounds}
    }
    for way in ("one", "burst"):
        without = statistics.median(times[(way, "without")]) * 1e6
        with_stream = statistics.median(times[(way, "with")]) * 1e6
        result[f"history_publish_{way}_us_without"] = round(without, 1)
        result[f"history_publish_{way}_us_with"] = round(with_stream, 1)
        result[f"history_publish_{way}_us_added"] = round(with_stream - without, 1)
    return result
