"""The HTTP gateway's figures: `python -m service.gateway` as a subprocess (the command
behind `make http`) on the bench's mongod and vhost, in a database of its own, driven from
the bench process by `httpx.AsyncClient`.

Closed loops throughout: each client sends its next request when the previous one is
answered. Placing and status changes run with `scale.http_clients` clients; get and list are
timed with one client (the latency of a request alone) and then with the same concurrent
clients (what the gateway serves, and the latency under that load). Every reply's status is
counted; the stored orders and the events on `orders.events` are checked after each change.

Each client is its own `httpx.AsyncClient` holding one keep-alive connection: one pool of 32
connections shared by 32 tasks costs httpx about three times the CPU per request (2.2 against
0.6 ms on the bench's host), and the load generator shares the two cores with the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from aio_pika.abc import AbstractConnection
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from bench.amqp import EXAMPLE_ORDER, EventCounter, encode
from bench.cpu import CpuMeter
from bench.infra import REPO_ROOT, Infra, RssSampler, Worker, log, rss_mb, stop_worker, track
from bench.measure import EVENTS, BenchError
from bench.numbers import ms, percentile
from bench.scale import Scale
from devtools.embedded_mongo import free_port
from service.gateway.auth import key_digest, new_key
from service.store.client import ORDERS, Document, database

DATABASE = "bench_http"
PREFIX = "/api/orders"
READY_PATH = f"{PREFIX}/meta/statuses"
READY_TIMEOUT = 60.0
REQUEST_TIMEOUT = 60.0
EVENTS_TIMEOUT = 60.0
ORDERS_PER_CUSTOMER = 25
"""Placed orders per customer: a list by customer has a full first page and a few dozen in
total, like the typical customers of the RPC latency runs."""
CHAIN = ("processing", "confirmed")
"""The status changes applied to every placed order, in this order."""
SLOW_S = 1.0
"""Requests slower than this are counted apart."""
EXAMPLES_KEPT = 5
SLOW_KEPT = 50
JSON_CONTENT = ("Content-Type", "application/json")


class GatewayFailed(BenchError):
    """The gateway exited or never served."""


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    body: bytes | None = None
    headers: tuple[tuple[str, str], ...] = ()


Job = Sequence[Call]
"""Requests one client sends one after the other (a chain of status changes)."""


@dataclass
class Loop:
    """What one closed loop saw."""

    expected: int
    concurrency: int
    latencies_s: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    """By HTTP status; 0 for a transport error (no reply)."""
    examples: list[str] = field(default_factory=list)
    """The first few unexpected replies."""
    slow_at_s: list[float] = field(default_factory=list)
    """When the requests slower than `SLOW_S` were sent, in seconds from the start."""
    started: float = field(default_factory=time.perf_counter)
    seconds: float = 0.0

    @property
    def requests(self) -> int:
        return len(self.latencies_s)

    @property
    def unexpected(self) -> int:
        return self.requests - self.statuses[self.expected]

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "clients": self.concurrency,
            "seconds": round(self.seconds, 2),
            "per_s": round(self.per_second, 1),
            "p50_ms": ms(percentile(self.latencies_s, 50)),
            "p99_ms": ms(percentile(self.latencies_s, 99)),
            "max_ms": ms(max(self.latencies_s)),
            "slow": len(self.slow_at_s),
            "slow_at_s": [round(at, 1) for at in sorted(self.slow_at_s)[:SLOW_KEPT]],
            "statuses": {str(status): n for status, n in sorted(self.statuses.items())},
            "unexpected": self.unexpected,
            "examples": self.examples,
        }


async def closed_loop(
    clients: Sequence[httpx.AsyncClient], jobs: Sequence[Job], *, expected: int
) -> Loop:
    """Each client takes the next job as it finishes one; every request's latency from just
    before it is sent to its body read."""
    loop = Loop(expected, len(clients))
    pending = iter(jobs)

    async def one_client(client: httpx.AsyncClient) -> None:
        for job in pending:  # shared: each job goes to exactly one client
            for call in job:
                await _send(client, call, loop)

    async with asyncio.TaskGroup() as group:
        for client in clients:
            group.create_task(one_client(client))
    loop.seconds = time.perf_counter() - loop.started
    return loop


async def _send(client: httpx.AsyncClient, call: Call, loop: Loop) -> None:
    started = time.perf_counter()
    try:
        response = await client.request(
            call.method, call.path, content=call.body, headers=call.headers
        )
    except httpx.HTTPError as exc:
        loop.latencies_s.append(time.perf_counter() - started)
        status, detail = 0, repr(exc)
    else:
        loop.latencies_s.append(time.perf_counter() - started)
        status = response.status_code
        detail = "" if status == loop.expected else f"{status} {response.text[:300]}"
    loop.statuses[status] += 1
    if loop.latencies_s[-1] > SLOW_S:
        loop.slow_at_s.append(started - loop.started)
    if status != loop.expected and len(loop.examples) < EXAMPLES_KEPT:
        loop.examples.append(f"{call.method} {call.path}: {detail}")


def start_gateway(infra: Infra, name: str, api_key: str) -> tuple[Worker, int]:
    """`python -m service.gateway` on a free port, on database `name`, accepting `api_key`;
    the worker's health port off (`ORDERS_HTTP_PORT=0`), as every worker of the bench."""
    port = free_port()
    env = {
        **os.environ,
        "ORDERS_AMQP_URL": infra.amqp_url,
        "ORDERS_MONGO_URL": infra.mongo.url,
        "ORDERS_MONGO_DATABASE": name,
        "ORDERS_API_HOST": "127.0.0.1",
        "ORDERS_API_PORT": str(port),
        "ORDERS_HTTP_PORT": "0",
        "ORDERS_API_KEY_HASHES": json.dumps([key_digest(api_key)]),
    }
    log_path = infra.logdir / "gateway.log"
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "service.gateway"],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return track(Worker(process, name, log_path)), port


async def wait_serving(
    client: httpx.AsyncClient,
    gateway: Worker,
    timeout: float = READY_TIMEOUT,  # noqa: ASYNC109 - a bounded wait
) -> float:
    """Serving = `GET /api/orders/meta/statuses` answers 200 (uvicorn listens only once the
    gateway's MongoDB, indexes and broker topology are ready); the seconds it took."""
    started = time.monotonic()
    last = "no attempt"
    while time.monotonic() - started < timeout:
        if not gateway.alive():
            raise GatewayFailed(
                f"gateway exited with {gateway.process.returncode}:\n{gateway.log_tail()}"
            )
        try:
            response = await client.get(READY_PATH, timeout=2.0)
        except httpx.TransportError as exc:
            last = repr(exc)
        else:
            if response.status_code == 200:
                return time.monotonic() - started
            last = f"{response.status_code} {response.text[:200]}"
        await asyncio.sleep(0.1)  # nothing to wait on: the port is not open yet
    raise GatewayFailed(
        f"gateway not serving within {timeout:.0f}s ({last}):\n{gateway.log_tail()}"
    )


@dataclass(frozen=True)
class Harness:
    """What every phase uses."""

    clients: list[httpx.AsyncClient]
    """`scale.http_clients` of them, one connection each, already connected."""
    connection: AbstractConnection
    db: AsyncDatabase[Document]
    sampler: RssSampler
    gateway: Worker
    mongod: int | None

    def meter(self) -> CpuMeter:
        return CpuMeter.begin(self.mongod, {"gateway": self.gateway.pid})


async def gateway_figures(
    infra: Infra,
    sampler: RssSampler,
    connection: AbstractConnection,
    mongo: AsyncMongoClient[Document],
    scale: Scale,
) -> dict[str, Any]:
    """Start the gateway on database `bench_http`, take every figure, stop it with SIGTERM
    and drop the database."""
    log(f"HTTP gateway: {scale.http_orders:,} orders, {scale.http_clients} clients")
    api_key = new_key()
    gateway, port = start_gateway(infra, DATABASE, api_key)
    sampler.watch(gateway, "http-start")
    details: dict[str, Any] = {"clients": scale.http_clients, "database": DATABASE}
    try:
        async with contextlib.AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(
                    httpx.AsyncClient(
                        base_url=f"http://127.0.0.1:{port}",
                        headers={"Authorization": f"Bearer {api_key}"},
                        timeout=REQUEST_TIMEOUT,
                        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
                    )
                )
                for _ in range(scale.http_clients)
            ]
            details["ready_s"] = round(await wait_serving(clients[0], gateway), 1)
            log(f"  gateway serving in {details['ready_s']:.1f}s")
            # Opens the clients' connections, so the timed runs do not pay for them.
            await closed_loop(
                clients, [[Call("GET", READY_PATH)]] * (4 * len(clients)), expected=200
            )
            run = Harness(
                clients,
                connection,
                database(mongo, DATABASE),
                sampler,
                gateway,
                infra.mongo.process.pid if infra.mongo.process else None,
            )
            details |= await _phases(run, scale)
        sampler.phase("http-idle")
        await asyncio.sleep(sampler.interval)
        sampler.sample()
        details["rss_mb"] = round(rss_mb(gateway.pid) or float("nan"), 1)
        details["rss_max_mb"] = max(
            (s["rss_mb"] for s in sampler.samples if s["pid"] == gateway.pid), default=None
        )
    finally:
        code = await stop_worker(gateway)
        sampler.watch(None, "")
        await mongo.drop_database(DATABASE)
    details["exit_code"] = code
    if code != 0:
        log(f"  the gateway exited with {code} after SIGTERM:\n{gateway.log_tail()}")
    return _figures(details)


async def _phases(run: Harness, scale: Scale) -> dict[str, Any]:
    out: dict[str, Any] = {}
    cpu: dict[str, dict[str, float]] = {}
    out["place"], cpu["place"] = await _place(run, scale.http_orders)
    ids = [doc["_id"] async for doc in run.db[ORDERS].find({}, {"_id": 1}).sort("_id", 1)]
    out["action"], cpu["action"] = await _actions(run, ids)

    rng = random.Random(11)  # noqa: S311 - a reproducible request mix, not secrets
    customers = sorted(await run.db[ORDERS].distinct("customer_id"))
    gets = [[Call("GET", f"{PREFIX}/{rng.choice(ids)}")] for _ in range(scale.http_gets)]
    lists = [
        [Call("GET", f"{PREFIX}/list?customer_id={rng.choice(customers)}")]
        for _ in range(scale.http_lists)
    ]
    for name, jobs in (("get", gets), ("list", lists)):
        for clients, label in ((run.clients[:1], name), (run.clients, f"{name}_loaded")):
            log(f"  GET {name}: {len(jobs):,} requests, {len(clients)} client(s)")
            run.sampler.phase(f"http-{label}")
            meter = run.meter()
            loop = await closed_loop(clients, jobs, expected=200)
            cpu[label] = meter.per_message(loop.requests)
            out[label] = loop.summary()
            _report(label, loop)
    out["cpu_ms_per_request"] = cpu
    return out


async def _place(run: Harness, n: int) -> tuple[dict[str, Any], dict[str, float]]:
    """N places of the example order, each with its own Idempotency-Key, `n / 25` customers;
    then N orders stored once and N `order.placed` events."""
    customers = max(1, n // ORDERS_PER_CUSTOMER)
    jobs = [
        [
            Call(
                "POST",
                f"{PREFIX}/place",
                encode(EXAMPLE_ORDER | {"customer_id": f"BENCH-C{i % customers:05d}"}),
                (JSON_CONTENT, ("Idempotency-Key", f"bench-{uuid.uuid4().hex}")),
            )
        ]
        for i in range(n)
    ]
    log(f"  POST place: {n:,} orders")
    run.sampler.phase("http-place")
    async with EventCounter.bound(run.connection, EVENTS, ["order.placed"]) as events:
        meter = run.meter()
        loop = await closed_loop(run.clients, jobs, expected=201)
        cpu = meter.per_message(loop.requests)
        placed = loop.statuses[201]
        await _events_settled(events, placed)
    _report("place", loop)
    stored = await run.db[ORDERS].count_documents({})
    numbers = await run.db[ORDERS].distinct("order_id")
    if stored != placed or len(numbers) != placed:
        raise BenchError(
            f"{placed} places answered 201, {stored} orders stored ({len(numbers)} order ids)"
        )
    return loop.summary() | _events(events), cpu


async def _actions(run: Harness, ids: list[int]) -> tuple[dict[str, Any], dict[str, float]]:
    """For each order, `update_status` to each status of `CHAIN`, one after the other (one
    client per order at a time); then every order at the last one, an event per change."""
    jobs = [
        [
            Call(
                "POST",
                f"{PREFIX}/{id}/action",
                encode({"action": "update_status", "status": status}),
                (JSON_CONTENT,),
            )
            for status in CHAIN
        ]
        for id in ids
    ]
    log(f"  POST action: {len(ids):,} orders, {' -> '.join(CHAIN)}")
    run.sampler.phase("http-action")
    async with EventCounter.bound(run.connection, EVENTS, ["order.status_changed"]) as events:
        meter = run.meter()
        loop = await closed_loop(run.clients, jobs, expected=200)
        cpu = meter.per_message(loop.requests)
        await _events_settled(events, loop.statuses[200])
    _report("action", loop)
    moved = await run.db[ORDERS].count_documents({"status": CHAIN[-1]})
    if loop.unexpected == 0 and moved != len(ids):
        raise BenchError(f"every action answered 200, but {moved} of {len(ids)} are {CHAIN[-1]}")
    return loop.summary() | _events(events) | {"orders_at_last_status": moved}, cpu


async def _events_settled(events: EventCounter, want: int) -> None:
    """Wait until `want` distinct events arrived (the gateway publishes an event before it
    answers, so they are normally all in already), then a moment for duplicates."""
    deadline = time.monotonic() + EVENTS_TIMEOUT
    while len(events.seen) < want:
        if time.monotonic() > deadline:
            raise BenchError(f"{len(events.seen)} of {want} events within {EVENTS_TIMEOUT:.0f}s")
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)


def _events(events: EventCounter) -> dict[str, int]:
    return {"events": len(events.seen), "event_duplicates": events.duplicates}


def _report(label: str, loop: Loop) -> None:
    log(
        f"  {label}: {loop.per_second:,.0f}/s, p50 {ms(percentile(loop.latencies_s, 50))} ms, "
        f"p99 {ms(percentile(loop.latencies_s, 99))} ms, statuses {dict(loop.statuses)}"
    )
    for example in loop.examples:
        log(f"    unexpected: {example}")


def _figures(details: dict[str, Any]) -> dict[str, Any]:
    """The flat figures of the table; everything behind them under `http`."""
    cpu = details["cpu_ms_per_request"]
    phases = ("place", "action", "get", "get_loaded", "list", "list_loaded")
    return {
        "http_place_per_s": details["place"]["per_s"],
        "http_action_per_s": details["action"]["per_s"],
        "http_get_p50_ms": details["get"]["p50_ms"],
        "http_get_p99_ms": details["get"]["p99_ms"],
        "http_get_per_s": details["get_loaded"]["per_s"],
        "http_list_p50_ms": details["list"]["p50_ms"],
        "http_list_p99_ms": details["list"]["p99_ms"],
        "http_list_per_s": details["list_loaded"]["per_s"],
        "gateway_cpu_ms_per_place": cpu["place"]["gateway"],
        "gateway_cpu_ms_per_action": cpu["action"]["gateway"],
        "gateway_cpu_ms_per_get": cpu["get_loaded"]["gateway"],
        "gateway_rss_mb": details["rss_mb"],
        "http_unexpected_replies": sum(details[phase]["unexpected"] for phase in phases),
        "http_slow_requests": sum(details[phase]["slow"] for phase in phases),
        "http": details,
    }
