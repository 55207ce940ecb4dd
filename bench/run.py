"""`make bench`: measure the worker against a naive consumer, its request latency, and its
queries on a large collection, the HTTP gateway's throughput and latency (bench/http.py), and
the publish cost of the event history stream (bench/history.py), in one run; print a table,
write `.bench/latest.json`.

    BENCH_SCALE=small make bench   # under 2 minutes: N=2,000, 100,000 orders, one run
    make bench                     # full: N=20,000, 1,000,000 orders, median of 3 runs

Starts its own mongod (temporary dbpath, free port) and uses the local RabbitMQ in a fresh
vhost `orders-bench-<hex>`, deleted at the end. Waits while `make chaos` runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import sys
import time
from datetime import UTC, datetime
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractConnection
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from bench import dataset, naive
from bench.amqp import RpcClient
from bench.cpu import CpuMeter
from bench.history import history_cost
from bench.http import gateway_figures
from bench.infra import (
    REPO_ROOT,
    Infra,
    RssSampler,
    Worker,
    WorkerFailed,
    chaos_running,
    code_version,
    infrastructure,
    log,
    machine,
    rss_mb,
    start_worker,
    stop_worker,
    versions,
    wait_for_no_chaos,
    wait_ready,
)
from bench.measure import (
    GET,
    LIST,
    STATS,
    BenchError,
    Throughput,
    create_topology,
    cursor_deep_page,
    deep_page_number,
    open_loop,
    repeat,
    sample_ids,
    soak_round,
    worker_action,
    worker_place,
)
from bench.report import jsonable, table, verdicts, write
from bench.scale import Scale, from_env
from devtools.rabbitmq import RabbitMQError
from service.store.client import Document, connect, database
from service.store.search import texts_ready

OUTPUT = REPO_ROOT / ".bench" / "latest.json"
LOGS = REPO_ROOT / ".bench" / "logs"
BIG_DATABASE = "bench_big"
SOAK_ROUNDS = 4
FINAL_READY_TIMEOUT = 900.0
"""The worker's start-up on the big collection may build derived data first."""
ATTEMPTS = 5
"""Whole runs tried when `make chaos` (which restarts RabbitMQ) interrupts one."""


async def throughput(
    infra: Infra,
    sampler: RssSampler,
    connection: AbstractConnection,
    mongo: AsyncMongoClient[Document],
    scale: Scale,
) -> dict[str, Any]:
    """`scale.repeats` rounds of: naive place, naive action, worker place, worker action;
    every figure is the median of the rounds."""
    plain = naive.naive_client(infra.mongo.url)
    rounds: list[dict[str, float]] = []
    cpu_rounds: list[dict[str, dict[str, float]]] = []
    try:
        await create_topology(infra, sampler, "bench_topology")
        for rep in range(1, scale.repeats + 1):
            naive_orders = plain[f"bench_naive_{rep}"]["orders"]
            mongod = infra.mongo.process.pid if infra.mongo.process else None
            log(f"round {rep}/{scale.repeats}: naive place, {scale.orders:,} messages")
            meter = CpuMeter.begin(mongod)
            naive_place = await naive.run_place(connection, naive_orders, scale.orders)
            cpu = {"naive_place": meter.per_message(scale.orders)}
            log(f"  naive place: {naive_place.per_second:,.0f}/s")
            meter = CpuMeter.begin(mongod)
            naive_action = await naive.run_action(connection, naive_orders, "pending", "processing")
            cpu["naive_action"] = meter.per_message(naive_action.messages)
            log(f"  naive action: {naive_action.per_second:,.0f}/s")
            db = database(mongo, f"bench_tp_{rep}")
            meter = CpuMeter.begin(mongod)
            place = await worker_place(infra, sampler, connection, db, n=scale.orders, rep=rep)
            cpu["worker_place"] = meter.per_message(place.messages, place.worker_cpu_s)
            log(f"  worker place: {place.per_second:,.0f}/s")
            meter = CpuMeter.begin(mongod)
            action = await worker_action(
                infra, sampler, connection, db, source="pending", target="processing", rep=rep
            )
            cpu["worker_action"] = meter.per_message(action.messages, action.worker_cpu_s)
            log(f"  worker action: {action.per_second:,.0f}/s")
            log(f"  CPU ms per message by process: {cpu}")
            for run in (naive_place, naive_action):
                if run.events != run.messages:
                    raise RuntimeError(f"naive run published {run.events} of {run.messages}")
            cpu["worker_place"] |= _after_start(place)
            cpu["worker_action"] |= _after_start(action)
            rounds.append(
                {
                    "naive_orders_per_s": naive_place.per_second,
                    "naive_action_per_s": naive_action.per_second,
                    "place_orders_per_s": place.per_second,
                    "action_per_s": action.per_second,
                    "place_event_duplicates": place.duplicates,
                    "action_event_duplicates": action.duplicates,
                }
            )
            cpu_rounds.append(cpu)
            await plain.drop_database(f"bench_naive_{rep}")
            await mongo.drop_database(f"bench_tp_{rep}")
    finally:
        await plain.close()
    figures: dict[str, Any] = {
        key: round(statistics.median(r[key] for r in rounds), 1)
        for key in (
            "naive_orders_per_s",
            "place_orders_per_s",
            "naive_action_per_s",
            "action_per_s",
        )
    }
    figures["ratio_place_vs_naive"] = round(
        figures["place_orders_per_s"] / figures["naive_orders_per_s"], 2
    )
    figures["ratio_action_vs_naive"] = round(
        figures["action_per_s"] / figures["naive_action_per_s"], 2
    )
    figures["throughput_rounds"] = [{k: round(v, 1) for k, v in r.items()} for r in rounds]
    figures["cpu_ms_per_message"] = {
        phase: {
            process: round(statistics.median(r[phase][process] for r in cpu_rounds), 2)
            for process in cpu_rounds[0][phase]
        }
        for phase in cpu_rounds[0]
    }
    per_message = figures["cpu_ms_per_message"]
    # Start-up excluded: from the worker's first event until its queue is drained and no
    # event or change is left for the events and rollups feeds.
    figures["worker_cpu_ms_per_place"] = per_message["worker_place"]["worker_after_start"]
    figures["worker_cpu_ms_per_action"] = per_message["worker_action"]["worker_after_start"]
    figures["mongod_cpu_ms_per_place"] = per_message["worker_place"]["mongod"]
    figures["mongod_docs_written_per_place"] = per_message["worker_place"]["mongod_docs_written"]
    figures["mongod_docs_written_per_action"] = per_message["worker_action"]["mongod_docs_written"]
    return figures


def _after_start(run: Throughput) -> dict[str, float]:
    """The worker's CPU per message without its start-up, and mongod's documents written
    per message, of one worker run."""
    return {
        "worker_after_start": run.worker_cpu_ms_per_message or 0.0,
        "mongod_docs_written": (run.docs_written or 0) / run.messages,
    }


async def queries(
    client: RpcClient, loaded: dataset.Loaded, scale: Scale, sampler: RssSampler
) -> dict[str, Any]:
    """Open-loop latency at a fixed offered rate, then each list/stats query repeated."""
    out = await rpc_latencies(client, loaded, scale, sampler)
    return out | await query_figures(client, loaded, scale, sampler)


async def rpc_latencies(
    client: RpcClient, loaded: dataset.Loaded, scale: Scale, sampler: RssSampler
) -> dict[str, Any]:
    """Open-loop latency of get, list and stats at a fixed offered rate."""
    out: dict[str, Any] = {}
    count = int(scale.rpc_rate * (scale.rpc_seconds + scale.rpc_warmup_s))
    ids = sample_ids(count, loaded.orders)
    customers = loaded.typical_customers
    sampler.phase("rpc")
    for name, key, body in (
        ("get", GET, lambda i: {"id": ids[i]}),
        ("list", LIST, lambda i: {"customer_id": customers[i % len(customers)]}),
        ("stats", STATS, lambda i: {"customer_id": customers[i % len(customers)]}),
    ):
        log(f"{key}: {scale.rpc_seconds:g}s at {scale.rpc_rate:g}/s (open loop)")
        measured = await open_loop(client, key, body, scale)
        out[f"rpc_{name}"] = measured
        out[f"rpc_{name}_p50_ms"] = measured["p50_ms"]
        out[f"rpc_{name}_p99_ms"] = measured["p99_ms"]
    return out


async def query_figures(
    client: RpcClient, loaded: dataset.Loaded, scale: Scale, sampler: RssSampler
) -> dict[str, Any]:
    """Each list/stats query repeated, and the cursor walk."""
    out: dict[str, Any] = {}
    sampler.phase("queries")
    first, last = loaded.date_window
    requests: dict[str, tuple[str, dict[str, Any]]] = {
        "list_first_page_customer": (LIST, {"customer_id": loaded.busy_customer}),
        "list_first_page_status": (LIST, {"status": "pending"}),
        "list_first_page_date": (
            LIST,
            {"date_from": first.isoformat(), "date_to": last.isoformat()},
        ),
        "list_first_page_default": (LIST, {}),
        "list_search": (LIST, {"search": loaded.search}),
        "list_deep_page": (LIST, {"page": deep_page_number(loaded.orders)}),
        "stats_customer": (STATS, {"customer_id": loaded.busy_customer}),
        "stats_global": (STATS, {}),
    }
    details: dict[str, Any] = {}
    for name, (key, request) in requests.items():
        log(f"{name}: {key} {request}")
        details[name] = await repeat(client, key, request, scale)
    out["queries"] = details
    for kind in ("customer", "status", "date"):
        out[f"list_first_page_{kind}_p99_ms"] = details[f"list_first_page_{kind}"]["p99_ms"]
    out["list_first_page_p99_ms"] = max(
        out[f"list_first_page_{kind}_p99_ms"] for kind in ("customer", "status", "date")
    )
    out["list_first_page_default_ms"] = details["list_first_page_default"]["p50_ms"]
    out["list_search_p50_ms"] = details["list_search"]["p50_ms"]
    out["list_deep_page_ms"] = details["list_deep_page"]["p50_ms"]
    out["stats_customer_ms"] = details["stats_customer"]["p50_ms"]
    out["stats_global_ms"] = details["stats_global"]["p50_ms"]

    log("cursor paging")
    cursor = await cursor_deep_page(client, loaded.orders, scale)
    out["cursor"] = cursor
    if cursor["supported"]:
        out["list_cursor_first_page_ms"] = cursor["first"]["p50_ms"]
        out["list_cursor_deep_page_ms"] = cursor["deep"]["p50_ms"]
    else:
        out["list_cursor_first_page_ms"] = None
        out["list_cursor_deep_page_ms"] = None
    return out


async def _soak(
    scale: Scale,
    sampler: RssSampler,
    connection: AbstractConnection,
    worker: Worker,
    *,
    big: AsyncDatabase[Document],
    first_new_id: int,
) -> dict[str, Any]:
    """The same live workload `SOAK_ROUNDS` times; RSS after each round. Growth = the last
    round's RSS minus the second's (the first half warms up allocator pools and caches): a
    leak keeps climbing through the second half."""
    per_round = scale.soak_orders // SOAK_ROUNDS
    rounds: list[dict[str, Any]] = []
    for number in range(1, SOAK_ROUNDS + 1):
        log(f"soak round {number}/{SOAK_ROUNDS}: {per_round:,} places, then an action on each")
        sampler.phase(f"soak-{number}")
        try:
            measured = await soak_round(connection, worker, big, per_round, first_new_id)
        except BenchError as exc:  # a slow soak still leaves the RSS samples meaningful
            log(f"soak incomplete: {exc}")
            rounds.append({"error": str(exc)})
            break
        await asyncio.sleep(sampler.interval)
        measured["rss_mb"] = round(rss_mb(worker.pid) or float("nan"), 1)
        rounds.append(measured)
    after = [r["rss_mb"] for r in rounds if "rss_mb" in r]
    return {
        "soak": rounds,
        "rss_growth_mb": (
            round(after[-1] - after[SOAK_ROUNDS // 2 - 1], 1) if len(after) == SOAK_ROUNDS else None
        ),
    }


class ChaosInterrupted(RuntimeError):
    """`make chaos` started mid-run: the figures would be worthless."""


BROKER_TROUBLE = (
    ChaosInterrupted,
    RabbitMQError,
    aio_pika.exceptions.AMQPException,
    aiormq.exceptions.AMQPError,
    ConnectionError,
    WorkerFailed,
)
"""Failures that another process restarting the local RabbitMQ causes: the whole run is
tried again (on fresh infrastructure) rather than reported."""


async def bench(infra: Infra, scale: Scale, sampler: RssSampler) -> dict[str, Any]:
    """Everything, in one run; abandoned as soon as `make chaos` shows up."""
    async with sampler.running():
        measuring = asyncio.create_task(_measure(infra, scale, sampler))
        chaos = asyncio.create_task(sampler.chaos.wait())
        await asyncio.wait({measuring, chaos}, return_when=asyncio.FIRST_COMPLETED)
        chaos.cancel()
        if not measuring.done():
            measuring.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await measuring
            raise ChaosInterrupted("`make chaos` started during the run")
        return measuring.result()


async def _measure(infra: Infra, scale: Scale, sampler: RssSampler) -> dict[str, Any]:
    result: dict[str, Any] = {}
    mongo = connect(infra.mongo.url, timeout_ms=30_000)
    try:
        connection = await aio_pika.connect(infra.amqp_url)
        async with connection:
            result |= await throughput(infra, sampler, connection, mongo, scale)
            sampler.phase("history")
            log("publish cost of the event history stream")
            result |= await history_cost(
                connection, sequential=scale.orders // 4, burst=scale.orders
            )
            result |= await _http(infra, sampler, connection, mongo, scale, worker=result)
            big = database(mongo, BIG_DATABASE)
            log(f"bulk-loading {scale.dataset:,} orders ({scale.customers:,} customers)")
            loaded = await dataset.load(big, scale.dataset, scale.customers, progress=log)
            log(f"  loaded in {loaded.load_s:.1f}s, ensure_indexes {loaded.index_s:.1f}s")
            result["dataset"] = {
                "orders": loaded.orders,
                "customers": loaded.customers,
                "load_s": round(loaded.load_s, 1),
                "checkpoint_s": round(loaded.checkpoint_s, 1),
                "busy_customer": loaded.busy_customer,
                "busy_customer_orders": loaded.busy_customer_orders,
                "date_window": [d.isoformat() for d in loaded.date_window],
                "search": loaded.search,
                "deep_page": deep_page_number(loaded.orders),
            }
            result["index_build_s"] = round(loaded.index_s, 1)
            result |= await _long_running_worker(
                infra, scale, sampler, connection, big=big, loaded=loaded
            )
        result["rss_trace"] = sampler.samples
    finally:
        await mongo.close()
    return result


async def _http(
    infra: Infra,
    sampler: RssSampler,
    connection: AbstractConnection,
    mongo: AsyncMongoClient[Document],
    scale: Scale,
    *,
    worker: dict[str, Any],
) -> dict[str, Any]:
    """The gateway's figures, in the conditions of the worker's throughput rounds just before
    (same mongod, a fresh database, nothing else running), and its rates against the
    worker's. A failed measurement is recorded, not raised: the other figures still count."""
    try:
        figures = await gateway_figures(infra, sampler, connection, mongo, scale)
    except BenchError as exc:
        log(f"HTTP gateway figures not taken: {exc}")
        return {"http": {"error": str(exc)}}
    for http, amqp in (("place", "place_orders_per_s"), ("action", "action_per_s")):
        figures[f"ratio_http_{http}_vs_worker"] = round(
            figures[f"http_{http}_per_s"] / worker[amqp], 2
        )
    return figures


async def search_texts_ready(url: str, timeout: float = FINAL_READY_TIMEOUT) -> float:  # noqa: ASYNC109
    """Seconds until the worker has collected the orders' search texts (on a bulk load: one
    pass reading the orders, then the texts' index build); searches use them from then on."""
    mongo = connect(url, timeout_ms=30_000)
    started = time.monotonic()
    try:
        db = database(mongo, BIG_DATABASE)
        while not await texts_ready(db):
            if time.monotonic() - started > timeout:
                raise BenchError("the search texts' backfill did not complete")
            await asyncio.sleep(1.0)
    finally:
        await mongo.close()
    return time.monotonic() - started


async def _long_running_worker(
    infra: Infra,
    scale: Scale,
    sampler: RssSampler,
    connection: AbstractConnection,
    *,
    big: AsyncDatabase[Document],
    loaded: dataset.Loaded,
) -> dict[str, Any]:
    """One worker on the big collection: latency, queries, then a live soak; its RSS."""
    result: dict[str, Any] = {}
    worker = start_worker(infra, BIG_DATABASE, "final")
    sampler.watch(worker, "start")
    try:
        ready_s = await wait_ready(infra, worker, timeout=FINAL_READY_TIMEOUT)
        result["final_worker_ready_s"] = round(ready_s, 1)
        log(f"worker on {loaded.orders:,} orders ready in {ready_s:.1f}s")
        # the worker collects the search texts in the background; searches wait for them
        result["search_texts_ready_s"] = round(
            ready_s + await search_texts_ready(infra.mongo.url), 1
        )
        log(f"search texts ready {result['search_texts_ready_s']:.1f}s after the start")
        async with RpcClient.connect(infra.amqp_url) as client:
            result |= await queries(client, loaded, scale, sampler)
        result |= await _soak(
            scale, sampler, connection, worker, big=big, first_new_id=loaded.orders + 1
        )
        sampler.phase("idle")
        await asyncio.sleep(2 * sampler.interval)
        sampler.sample()
        result["worker_rss_mb"] = round(rss_mb(worker.pid) or float("nan"), 1)
        result["rss_samples_mb"] = [s["rss_mb"] for s in sampler.samples if s["pid"] == worker.pid]
    finally:
        await stop_worker(worker)
        sampler.watch(None, "")
    return result


def attempt(scale: Scale) -> tuple[dict[str, Any], float]:
    """One whole run on fresh infrastructure; returns the figures and the wall time."""
    wait_for_no_chaos()
    started = time.monotonic()
    log(f"scale {scale.name}: N={scale.orders:,}, dataset {scale.dataset:,}")
    sampler = RssSampler()
    with infrastructure(LOGS) as infra:
        described = {
            "machine": machine(),
            "versions": versions(infra.mongo),
            "code": code_version(),  # as the run starts: others may be editing `service/`
        }
        measured = asyncio.run(bench(infra, scale, sampler))
    phases: dict[str, float] = {}
    for sample in measured.get("rss_trace", []):
        if sample.get("load1") is not None:
            phase = sample["phase"]
            phases[phase] = max(phases.get(phase, 0.0), sample["load1"])
    measured["load1_max_by_phase"] = phases
    return described | measured, round(time.monotonic() - started, 1)


def main() -> int:
    scale = from_env()
    for number in range(1, ATTEMPTS + 1):
        try:
            measured, wall = attempt(scale)
            break
        except Exception as exc:
            if number == ATTEMPTS or not (isinstance(exc, BROKER_TROUBLE) or chaos_running()):
                raise
            log(f"run {number} abandoned ({exc.__class__.__name__}: {exc}); starting again")

    result: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "scale": scale.name,
        "n": scale.orders,
        "repeats": scale.repeats,
        "dataset_size": scale.dataset,
        **measured,
        "wall_s": wall,
    }
    result = jsonable(result)
    result["targets"] = verdicts(result)
    write(result, OUTPUT)
    sys.stdout.write(f"\n{table(result)}\n\nwall time {wall:.0f}s; written to {OUTPUT}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
