"""The worker's figures: end-to-end throughput from a pre-loaded queue, open-loop request
latency, and the list/stats queries on the big collection, all through RabbitMQ."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aio_pika.abc import AbstractConnection
from pymongo.asynchronous.database import AsyncDatabase

from bench.amqp import EXAMPLE_ORDER, EventCounter, RpcClient, encode, preload, queue_depth
from bench.cpu import cpu_seconds
from bench.infra import Infra, RssSampler, Worker, WorkerFailed, log, start_worker, stop_worker
from bench.numbers import ms, percentile
from bench.scale import Scale
from service.store.client import ORDERS, Document
from service.store.feed import pending
from service.store.outbox import backlog
from service.store.rollups.deltas import FEED_PIPELINE, ROLLUPS_FEED

PLACE = "orders.place"
ACTION = "orders.action"
GET = "orders.get"
LIST = "orders.list"
STATS = "orders.stats"
EVENTS = "orders.events"
PER_PAGE = 15
DEEP_PAGE = 10_000
WALK_PER_PAGE = 100
SOAK_TIMEOUT = 240.0


class BenchError(RuntimeError):
    """A measurement could not be taken (wrong counts, error replies, a dead worker)."""


@dataclass(frozen=True)
class Throughput:
    messages: int
    seconds: float
    duplicates: int
    worker_cpu_s: float | None = None
    """CPU the worker used in its whole life (start-up and drain included)."""
    worker_cpu_ms_per_message: float | None = None
    """The worker's CPU from its first event to the end of the drain, per message handled
    in that time: start-up excluded."""
    docs_written: int | None = None
    """Documents mongod inserted, updated or deleted while the worker ran (serverStatus)."""

    @property
    def per_second(self) -> float:
        return self.messages / self.seconds


async def _wait_events(counter: EventCounter, worker: Worker, timeout: float) -> float:  # noqa: ASYNC109
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not counter.done.is_set():
        if not worker.alive():
            raise WorkerFailed(f"worker exited mid-run:\n{worker.log_tail()}")
        if counter.queue.channel.is_closed:
            raise ConnectionError("the broker closed the event queue's channel (a restart?)")
        if loop.time() > deadline:
            raise BenchError(
                f"{len(counter.seen)} of {counter.target} events within {timeout:.0f}s"
            )
        await asyncio.sleep(0.05)
    return await counter.wait(1.0)


async def _drained(connection: AbstractConnection, queue: str, worker: Worker) -> None:
    """Wait until the worker took everything from `queue`, then give it a moment to ack."""
    for _ in range(600):
        if await queue_depth(connection, queue) == 0:
            break
        if not worker.alive():
            raise WorkerFailed(f"worker exited:\n{worker.log_tail()}")
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)


async def _settled(db: AsyncDatabase[Document]) -> None:
    """Wait until the events feed has published every event and the rollups feed has taken
    every change, so the documents written (and the CPU) count every write the run's
    messages cause."""
    for _ in range(300):
        if not await backlog(db) and await _rollups_taken(db):
            return
        await asyncio.sleep(0.1)
    raise BenchError("events or rollup deltas still pending 30 s after the run")


async def _rollups_taken(db: AsyncDatabase[Document]) -> bool:
    async with db.client.start_session(snapshot=True) as session:
        changes = await pending(db, ROLLUPS_FEED, FEED_PIPELINE, session)
    return changes == []


def _timeout(n: int) -> float:
    return 120.0 + n / 50


async def _run_from_queue(
    infra: Infra,
    sampler: RssSampler,
    connection: AbstractConnection,
    *,
    db: AsyncDatabase[Document],
    queue: str,
    bodies: list[bytes],
    event: str,
    name: str,
) -> Throughput:
    """Pre-load `bodies` into `queue` while no worker runs, start the worker, and time from
    its first event to the N-th distinct one."""
    n = len(bodies)
    channel = await connection.channel()
    try:
        leftover = await queue_depth(connection, queue)
        if leftover:
            raise BenchError(f"{leftover} messages left in {queue} before the run")
        exchange = await channel.get_exchange("orders", ensure=False)
        await preload(channel, exchange, queue, bodies)
    finally:
        await channel.close()
    depth = await queue_depth(connection, queue)
    if depth != n:
        raise BenchError(f"{queue} holds {depth} messages after pre-loading {n}")
    written_before = await documents_written(db)
    async with EventCounter.bound(connection, EVENTS, [event]) as counter:
        counter.expect(n)
        worker = start_worker(infra, db.name, name)
        sampler.watch(worker, name)
        first = asyncio.create_task(_cpu_at_first_event(counter, worker.pid))
        try:
            seconds = await _wait_events(counter, worker, _timeout(n))
            await _drained(connection, queue, worker)
            await _settled(db)
            worker_cpu_s = cpu_seconds(worker.pid)
            started_cpu_s, handled_before = await first
        finally:
            first.cancel()
            sampler.sample()
            await stop_worker(worker)
            sampler.watch(None, "")
        per_message = None
        if worker_cpu_s is not None and started_cpu_s is not None and n > handled_before:
            per_message = round(1000 * (worker_cpu_s - started_cpu_s) / (n - handled_before), 3)
        written = await documents_written(db) - written_before
        return Throughput(n, seconds, counter.duplicates, worker_cpu_s, per_message, written)


async def _cpu_at_first_event(counter: EventCounter, pid: int) -> tuple[float | None, int]:
    """The worker's CPU when its first event arrives (its start-up done), and how many
    events had arrived by then."""
    while not counter.seen:  # noqa: ASYNC110 - the counter's consumer fills it; polled here
        await asyncio.sleep(0.002)
    return cpu_seconds(pid), len(counter.seen)


async def documents_written(db: AsyncDatabase[Document]) -> int:
    """Documents this mongod has inserted, updated or deleted since it started."""
    status = await db.client.admin.command("serverStatus")
    document = status["metrics"]["document"]
    return int(document["inserted"]) + int(document["updated"]) + int(document["deleted"])


async def worker_place(
    infra: Infra,
    sampler: RssSampler,
    connection: AbstractConnection,
    db: AsyncDatabase[Document],
    *,
    n: int,
    rep: int,
) -> Throughput:
    """N `orders.place` commands (the example order, a unique `message_id` each, no
    `reply_to`); then every order must be stored exactly once."""
    body = encode(EXAMPLE_ORDER)
    result = await _run_from_queue(
        infra,
        sampler,
        connection,
        db=db,
        queue=PLACE,
        bodies=[body] * n,
        event="order.placed",
        name=f"place-{rep}",
    )
    stored = await db[ORDERS].count_documents({})
    numbers = await db[ORDERS].distinct("order_id")
    if stored != n or len(numbers) != n:
        raise BenchError(f"expected {n} orders stored once, found {stored} ({len(numbers)} ids)")
    return result


async def worker_action(
    infra: Infra,
    sampler: RssSampler,
    connection: AbstractConnection,
    db: AsyncDatabase[Document],
    *,
    source: str,
    target: str,
    rep: int,
) -> Throughput:
    """One `update_status` command per order (`source` -> `target`)."""
    ids = [doc["_id"] async for doc in db[ORDERS].find({"status": source}, {"_id": 1})]
    bodies = [encode({"id": id, "action": "update_status", "status": target}) for id in ids]
    result = await _run_from_queue(
        infra,
        sampler,
        connection,
        db=db,
        queue=ACTION,
        bodies=bodies,
        event="order.status_changed",
        name=f"action-{rep}",
    )
    moved = await db[ORDERS].count_documents({"status": target})
    if moved != len(ids):
        raise BenchError(f"expected {len(ids)} orders {target}, found {moved}")
    return result


async def create_topology(infra: Infra, sampler: RssSampler, database: str) -> None:
    """Start the worker once so its exchanges and queues exist, then stop it."""
    from bench.infra import wait_ready  # noqa: PLC0415 - keeps the module graph flat

    worker = start_worker(infra, database, "topology")
    sampler.watch(worker, "topology")
    try:
        await wait_ready(infra, worker)
    finally:
        await stop_worker(worker)
        sampler.watch(None, "")


# --- request/reply -----------------------------------------------------------------------


async def open_loop(
    client: RpcClient, routing_key: str, body: Callable[[int], Any], scale: Scale
) -> dict[str, Any]:
    warmup = int(scale.rpc_rate * scale.rpc_warmup_s)
    await client.open_loop(routing_key, body, rate=scale.rpc_rate, count=warmup)
    rate = scale.rpc_rate
    count = int(rate * scale.rpc_seconds)
    result = await client.open_loop(
        routing_key, lambda i: body(warmup + i), rate=scale.rpc_rate, count=count
    )
    if result.failures or result.lost:
        log(f"{routing_key}: {result.failures} error replies, {result.lost} without a reply")
    return {
        "requests": count,
        "rate_per_s": scale.rpc_rate,
        "p50_ms": ms(percentile(result.latencies_s, 50)),
        "p99_ms": ms(percentile(result.latencies_s, 99)),
        "max_ms": ms(max(result.latencies_s, default=float("nan"))),
        "send_lag_p99_ms": ms(percentile(result.send_lags_s, 99)),
        "p99_ms_by_second": [ms(percentile(second, 99)) for second in result.by_second(rate)],
        "error_replies": result.failures,
        "lost": result.lost,
    }


async def repeat(
    client: RpcClient, routing_key: str, body: dict[str, Any], scale: Scale
) -> dict[str, Any]:
    """Closed loop: the same request up to `query_repeats` times (at least
    `query_min_repeats`, fewer when `query_budget_s` runs out); latencies in ms."""
    latencies: list[float] = []
    started = time.monotonic()
    while len(latencies) < scale.query_repeats:
        reply = await client.call(routing_key, body)
        if reply.body.get("success") is not True:
            raise BenchError(f"{routing_key} {body} failed: {reply.body}")
        latencies.append(reply.latency_s)
        over = time.monotonic() - started > scale.query_budget_s
        if over and len(latencies) >= scale.query_min_repeats:
            break
    return {
        "request": body,
        "repeats": len(latencies),
        "p50_ms": ms(percentile(latencies, 50)),
        "p99_ms": ms(percentile(latencies, 99)),
        "max_ms": ms(max(latencies)),
        "total": (reply.body.get("pagination") or {}).get("total"),
    }


async def cursor_deep_page(client: RpcClient, dataset: int, scale: Scale) -> dict[str, Any]:
    """Keyset paging, when the worker has it: walk `next_cursor` (100 a page) to the rows
    just before page `DEEP_PAGE` of 15, then time that one page (the same cursor, repeated).
    A walk that outlasts `scale.cursor_walk_budget_s` stops there and times the page it
    reached (`page` says which).

    Returns `{"supported": False, ...}` when `{"cursor": ""}` is refused."""
    probe = await client.call(LIST, {"cursor": "", "per_page": PER_PAGE})
    pagination = probe.body.get("pagination") or {}
    if probe.body.get("success") is not True or "next_cursor" not in pagination:
        return {"supported": False, "reply": probe.body.get("error") or pagination}
    first = await repeat(client, LIST, {"cursor": "", "per_page": PER_PAGE}, scale)
    page = deep_page_number(dataset)
    rows = (page - 1) * PER_PAGE
    cursor = ""
    walked = 0
    started = time.monotonic()
    while walked < rows and time.monotonic() - started < scale.cursor_walk_budget_s:
        size = min(WALK_PER_PAGE, rows - walked)
        reply = await client.call(LIST, {"cursor": cursor, "per_page": size})
        next_cursor = (reply.body.get("pagination") or {}).get("next_cursor")
        if reply.body.get("success") is not True or not next_cursor:
            raise BenchError(f"cursor walk stopped after {walked} rows: {reply.body}")
        cursor = next_cursor
        walked += size
    walk_s = time.monotonic() - started
    deep = await repeat(client, LIST, {"cursor": cursor, "per_page": PER_PAGE}, scale)
    deep.pop("request")
    first.pop("request")
    return {
        "supported": True,
        "page": walked // PER_PAGE + 1,
        "target_page": page,
        "rows_skipped": walked,
        "walk_requests": -(-walked // WALK_PER_PAGE),
        "walk_s": round(walk_s, 1),
        "first": first,
        "deep": deep,
    }


def deep_page_number(dataset: int) -> int:
    """Page 10,000 of 15, or 90 % of the way down a smaller collection."""
    return min(DEEP_PAGE, int(dataset * 0.9) // PER_PAGE)


async def soak_round(
    connection: AbstractConnection,
    worker: Worker,
    db: AsyncDatabase[Document],
    n: int,
    first_new_id: int,
) -> dict[str, Any]:
    """One round of a live workload on the long-running worker, to watch its memory: N
    places, then one action on each new order, published as fast as confirms allow while
    it consumes."""
    channel = await connection.channel()
    try:
        exchange = await channel.get_exchange("orders", ensure=False)
        async with EventCounter.bound(connection, EVENTS, ["order.placed"]) as placed:
            placed.expect(n)
            started = time.monotonic()
            await preload(channel, exchange, PLACE, [encode(EXAMPLE_ORDER)] * n)
            await _wait_events(placed, worker, SOAK_TIMEOUT)
            place_s = time.monotonic() - started
        new = db[ORDERS].find({"_id": {"$gte": first_new_id}, "status": "pending"}, {"_id": 1})
        ids = [doc["_id"] async for doc in new]
        bodies = [
            encode({"id": id, "action": "update_status", "status": "confirmed"}) for id in ids
        ]
        async with EventCounter.bound(connection, EVENTS, ["order.status_changed"]) as changed:
            changed.expect(len(ids))
            started = time.monotonic()
            await preload(channel, exchange, ACTION, bodies)
            await _wait_events(changed, worker, SOAK_TIMEOUT)
            action_s = time.monotonic() - started
        return {
            "places": n,
            "places_per_s": round(n / place_s, 1),
            "actions": len(ids),
            "actions_per_s": round(len(ids) / action_s, 1),
        }
    finally:
        await channel.close()


def sample_ids(count: int, top: int, seed: int = 7) -> list[int]:
    rng = random.Random(seed)  # noqa: S311 - reproducible request mix, not secrets
    return [rng.randint(1, top) for _ in range(count)]
