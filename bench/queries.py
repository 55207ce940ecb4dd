"""Only the query part of `make bench`, on a data directory kept between runs, so the same
million orders can be measured before and after a change (and an existing database's
migration timed: the worker's start-up on orders loaded by an earlier version).

    uv run python -m bench.queries --dbpath /tmp/oq --label before
    uv run python -m bench.queries --dbpath /tmp/oq --label after
    uv run python -m bench.queries --dbpath /tmp/oq --label w --no-queries --inserts 20000

The first run bulk-loads the collection (as `make bench` does, `BENCH_SCALE` respected) and
keeps what the queries need in `<dbpath>/loaded.json`; later runs reuse both. Each run
starts mongod on the directory and a worker on a fresh vhost, waits until the worker is
ready (`ready_s`: index checks, rollup builds and backfills included), runs the same
requests as `make bench` (`bench.run.queries`), reads the collection's and indexes' sizes,
and writes `.bench/queries-<label>.json`. With `--inserts N`, it then times N more orders
inserted 10 at a time (`insert_many`, majority write concern, one batch at a time: about
how the worker's group commit writes them), half with their search texts and half without,
alternating, with mongod's CPU per order, and removes them.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import time
import uuid
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiormq

from bench import dataset
from bench.amqp import RpcClient
from bench.infra import (
    REPO_ROOT,
    Infra,
    RssSampler,
    WorkerFailed,
    _delete_vhost,
    code_version,
    loadavg,
    log,
    machine,
    start_worker,
    stop_worker,
    wait_ready,
)
from bench.report import jsonable
from bench.run import (
    BIG_DATABASE,
    FINAL_READY_TIMEOUT,
    query_figures,
    rpc_latencies,
    search_texts_ready,
)
from bench.scale import from_env
from devtools import rabbitmq
from devtools.embedded_mongo import free_port, start_mongod
from service.store.client import ORDERS, connect, database
from service.store.search import KnownTexts

LOADED = "loaded.json"
ATTEMPTS = 5
"""Runs tried when the broker goes away meanwhile (something else restarts it)."""
INSERT_BATCH = 10
INSERT_ROUND = 2_000
VARIANTS = ("with_texts", "without_texts")


def _save(path: Path, loaded: dataset.Loaded) -> None:
    fields = dataclasses.asdict(loaded)
    path.write_text(json.dumps(fields, default=lambda v: v.isoformat()))


def _restore(path: Path) -> dataset.Loaded:
    fields = json.loads(path.read_text())
    fields["date_window"] = tuple(date.fromisoformat(d) for d in fields["date_window"])
    fields["end"] = datetime.fromisoformat(fields["end"])
    return dataset.Loaded(**fields)


async def _sizes(url: str) -> dict[str, Any]:
    mongo = connect(url, timeout_ms=30_000)
    try:
        stats = await database(mongo, BIG_DATABASE).command("collStats", ORDERS)
        return {
            "count": stats["count"],
            "size_mb": round(stats["size"] / 2**20, 1),
            "storage_mb": round(stats["storageSize"] / 2**20, 1),
            "index_mb": {k: round(v / 2**20, 1) for k, v in stats["indexSizes"].items()},
            "total_index_mb": round(stats["totalIndexSize"] / 2**20, 1),
        }
    finally:
        await mongo.close()


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _inserts(infra: Infra, loaded: dataset.Loaded, count: int) -> dict[str, Any]:
    """`count` generated orders, 10 per `insert_many`, then removed; ids past the loaded ones.
    Half of them as the worker stores them (their search texts first), half without, in
    alternating rounds of `INSERT_ROUND` orders each, so both see the same load; mongod's
    CPU, the wall time and WiredTiger's cursor inserts (documents and index keys) per order
    for each."""
    assert infra.mongo.process is not None
    mongod = infra.mongo.process.pid
    first_id = 10 * loaded.orders
    # the loaded customers (the load's seed): their texts are known, as for repeat customers
    generator = dataset.Generator(count, loaded.customers, dataset.SEED, loaded.end)
    docs = generator.batch(0, count)
    for i, doc in enumerate(docs):
        doc["_id"] = first_id + i
        doc["order_id"] = 2_000_000_000 + i  # beyond the loaded ones (below 10**9)
    totals = {variant: {"orders": 0, "wall": 0.0, "cpu": 0.0, "wt": 0} for variant in VARIANTS}
    mongo = connect(infra.mongo.url, timeout_ms=30_000)
    try:
        db = database(mongo, BIG_DATABASE)
        orders = db[ORDERS]
        texts = KnownTexts()
        await orders.delete_many({"_id": {"$gte": first_id}})
        for number, start in enumerate(range(0, count, INSERT_ROUND)):
            variant = VARIANTS[number % 2]
            chunk = docs[start : start + INSERT_ROUND]
            before = await mongo.admin.command("serverStatus")
            cpu, started = _cpu_s(mongod), time.perf_counter()
            for at in range(0, len(chunk), INSERT_BATCH):
                batch = chunk[at : at + INSERT_BATCH]
                if variant == "with_texts":  # as the worker stores orders
                    await texts.remember(db, (doc["search_text"] for doc in batch))
                await orders.insert_many(batch)
            wall, cpu = time.perf_counter() - started, _cpu_s(mongod) - cpu
            after = await mongo.admin.command("serverStatus")
            total = totals[variant]
            total["orders"] += len(chunk)
            total["wall"] += wall
            total["cpu"] += cpu
            total["wt"] += (
                after["wiredTiger"]["cursor"]["cursor insert calls"]
                - before["wiredTiger"]["cursor"]["cursor insert calls"]
            )
        await orders.delete_many({"_id": {"$gte": first_id}})
    finally:
        await mongo.close()
    return {
        "batch": INSERT_BATCH,
        "round": INSERT_ROUND,
        "load1": loadavg(),
        **{
            variant: {
                "orders": t["orders"],
                "orders_per_s": round(t["orders"] / t["wall"], 1),
                "mongod_cpu_ms_per_order": round(1000 * t["cpu"] / t["orders"], 3),
                "wt_cursor_inserts_per_order": round(t["wt"] / t["orders"], 1),
            }
            for variant, t in totals.items()
            if t["orders"]
        },
    }


async def _run(
    infra: Infra,
    dbpath: Path,
    label: str,
    *,
    measure_queries: bool,
    open_loop: bool,
    inserts: int,
) -> dict[str, Any]:
    scale = from_env()
    saved = dbpath / LOADED
    result: dict[str, Any] = {"label": label, "code": code_version(), "machine": machine()}
    if saved.exists():
        loaded = _restore(saved)
    else:
        mongo = connect(infra.mongo.url, timeout_ms=30_000)
        try:
            log(f"bulk-loading {scale.dataset:,} orders ({scale.customers:,} customers)")
            loaded = await dataset.load(
                database(mongo, BIG_DATABASE), scale.dataset, scale.customers, progress=log
            )
        finally:
            await mongo.close()
        _save(saved, loaded)
        result["load_s"] = round(loaded.load_s, 1)
        result["index_build_s"] = round(loaded.index_s, 1)
    result["dataset"] = {"orders": loaded.orders, "busy_customer": loaded.busy_customer}
    result["load1_start"] = loadavg()
    if measure_queries:
        sampler = RssSampler()
        worker = start_worker(infra, BIG_DATABASE, f"queries-{label}")
        try:
            ready = await wait_ready(infra, worker, timeout=FINAL_READY_TIMEOUT)
            result["ready_s"] = round(ready, 1)
            log(f"worker ready in {result['ready_s']}s")
            result["search_texts_ready_s"] = round(
                ready + await search_texts_ready(infra.mongo.url), 1
            )
            log(f"search texts ready {result['search_texts_ready_s']}s after the start")
            result["load1_ready"] = loadavg()
            async with RpcClient.connect(infra.amqp_url) as client:
                result |= await query_figures(client, loaded, scale, sampler)
                if open_loop:
                    result |= await rpc_latencies(client, loaded, scale, sampler)
            result["load1_end"] = loadavg()
        finally:
            await stop_worker(worker)
    result["sizes"] = await _sizes(infra.mongo.url)
    if inserts:
        log(f"inserting {inserts:,} orders, {INSERT_BATCH} at a time")
        result["inserts"] = await _inserts(infra, loaded, inserts)
        log(f"inserts: {result['inserts']}")
    return result


def _attempt(dbpath: Path, args: argparse.Namespace, logdir: Path) -> dict[str, Any]:
    rabbitmq.ensure_running()
    mongo = start_mongod(dbpath / "mongo", free_port(), logpath=logdir / "mongod-queries.log")
    vhost = f"orders-bench-{uuid.uuid4().hex[:8]}"
    try:
        rabbitmq.create_vhost(vhost)
        try:
            url = (
                f"amqp://guest:guest@{rabbitmq.DEFAULT_HOST}:{rabbitmq.DEFAULT_PORT}/"
                f"{quote(vhost, safe='')}"
            )
            infra = Infra(mongo, url, vhost, dbpath, logdir)
            return asyncio.run(
                _run(
                    infra,
                    dbpath,
                    args.label,
                    measure_queries=args.queries,
                    open_loop=args.open_loop,
                    inserts=args.inserts,
                )
            )
        finally:
            _delete_vhost(vhost)
    finally:
        mongo.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dbpath", type=Path, required=True)
    parser.add_argument("--label", required=True)
    parser.add_argument("--no-queries", dest="queries", action="store_false")
    parser.add_argument("--no-open-loop", dest="open_loop", action="store_false")
    parser.add_argument("--inserts", type=int, default=0)
    args = parser.parse_args()
    dbpath: Path = args.dbpath.resolve()
    logdir = REPO_ROOT / ".bench" / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    for attempt in range(1, ATTEMPTS + 1):
        try:
            result = _attempt(dbpath, args, logdir)
            break
        except (aiormq.exceptions.AMQPError, rabbitmq.RabbitMQError, WorkerFailed) as exc:
            if attempt == ATTEMPTS:
                raise
            log(f"the broker went away ({type(exc).__name__}); starting again in 30 s")
            time.sleep(30)
    result["attempts"] = attempt
    result["wall_s"] = round(time.monotonic() - started, 1)
    out = REPO_ROOT / ".bench" / f"queries-{args.label}.json"
    out.write_text(json.dumps(jsonable(result), indent=2))
    keys = [k for k in result if k.endswith(("_ms", "_s")) and not isinstance(result[k], dict)]
    for key in keys:
        log(f"{key}: {result[key]}")
    log(f"sizes: {result['sizes']}")
    log(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
