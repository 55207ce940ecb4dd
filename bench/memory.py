"""Memory under hostile input: 3,000 place commands of about 240 KB each (metadata with
14,000 keys, each holding a one-element list), sent to the worker over AMQP and then to the
HTTP gateway over HTTP, with the peak and final RSS of each process.

    make bench-memory                            # or: uv run python -m bench.memory
    BENCH_MEMORY_ORDERS=400 make bench-memory    # fewer orders
    BENCH_MEMORY_ONLY=worker make bench-memory   # one process (worker or gateway)

Starts its own mongod (temporary dbpath, free port) and vhost `orders-bench-<hex>` like
`make bench` (`BENCH_VHOST_PREFIX` changes the prefix); the worker and the gateway run as
subprocesses with the default settings. The worker gets every order with `reply_to` (so
it builds and sends each reply as well), with at most `IN_FLIGHT` unanswered at a time so
the broker never holds the whole load; the gateway gets them from `HTTP_CLIENTS`
concurrent clients. The bound (docs/benchmarks.md "Memory under large orders"): each
process's RSS stays <= 300 MB. Writes `.bench/memory.json`; exits 1 when a bound is
exceeded or an order was not stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
import uuid
from collections import Counter
from typing import Any

import aio_pika
import httpx
from pymongo import AsyncMongoClient

from bench.amqp import EXAMPLE_ORDER, JSON, encode
from bench.http import PREFIX, start_gateway, wait_serving
from bench.infra import (
    REPO_ROOT,
    Infra,
    code_version,
    infrastructure,
    log,
    machine,
    rss_mb,
    start_worker,
    stop_worker,
    versions,
    wait_ready,
)
from service.config import Settings
from service.gateway.auth import new_key
from service.store.client import ORDERS, Document

ORDERS_SENT = int(os.environ.get("BENCH_MEMORY_ORDERS", "3000"))
METADATA_KEYS = 14_000
BOUND_MB = 300.0
IN_FLIGHT = 64
"""Unanswered requests at a time (twice the worker's default prefetch)."""
HTTP_CLIENTS = 8
SAMPLE_SECONDS = 0.2
SETTLE_SECONDS = 5.0
"""Idle time before the final RSS is read (the relay's sweep and the allocator settle)."""
TIMEOUT_S = 1800.0


def large_order(i: int) -> dict[str, Any]:
    """The example order with `METADATA_KEYS` metadata keys, each a one-element list."""
    metadata = {f"m{k:05d}": [10_000 + (i * 7919 + k) % 90_000] for k in range(METADATA_KEYS)}
    return EXAMPLE_ORDER | {"customer_id": f"MEM-C{i % 100:03d}", "metadata": metadata}


class Peak:
    """Samples a process's RSS every `SAMPLE_SECONDS` and keeps the highest."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_mb = 0.0
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> float | None:
        value = rss_mb(self.pid)
        if value is not None:
            self.peak_mb = max(self.peak_mb, value)
        return value

    async def _loop(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(SAMPLE_SECONDS)

    def __enter__(self) -> Peak:
        self._task = asyncio.get_running_loop().create_task(self._loop())
        return self

    def __exit__(self, *_: object) -> None:
        if self._task is not None:
            self._task.cancel()


async def _count(mongo: AsyncMongoClient[Document], database: str) -> int:
    return await mongo[database][ORDERS].count_documents({})


async def worker_run(infra: Infra, mongo: AsyncMongoClient[Document]) -> dict[str, Any]:
    database = "bench_memory_worker"
    worker = start_worker(infra, database, "memory", prefetch=Settings().prefetch)
    out: dict[str, Any] = {"process": "worker", "transport": "AMQP", "orders": ORDERS_SENT}
    try:
        out["ready_s"] = round(await wait_ready(infra, worker), 1)
        out["rss_start_mb"] = round(rss_mb(worker.pid) or 0.0, 1)
        replies: Counter[str] = Counter()
        started = time.monotonic()
        with Peak(worker.pid) as peak:
            connection = await aio_pika.connect(infra.amqp_url)
            async with connection:
                channel = await connection.channel()
                exchange = await channel.get_exchange("orders", ensure=False)
                reply_queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
                window = asyncio.Semaphore(IN_FLIGHT)
                done = asyncio.Event()

                async def on_reply(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                    body = json.loads(message.body)
                    replies["success" if body.get("success") else body["error"]["code"]] += 1
                    window.release()
                    if replies.total() >= ORDERS_SENT:
                        done.set()

                await reply_queue.consume(on_reply, no_ack=True)
                for i in range(ORDERS_SENT):
                    await window.acquire()
                    await exchange.publish(
                        aio_pika.Message(
                            encode(large_order(i)),
                            content_type=JSON,
                            message_id=uuid.uuid4().hex,
                            correlation_id=uuid.uuid4().hex,
                            reply_to=reply_queue.name,
                        ),
                        routing_key="orders.place",
                    )
                    if i % 500 == 0:
                        log(f"  worker: {i:,} sent, RSS {peak.sample() or 0:.0f} MB")
                await asyncio.wait_for(done.wait(), TIMEOUT_S)
            out["seconds"] = round(time.monotonic() - started, 1)
            await asyncio.sleep(SETTLE_SECONDS)
            out["rss_final_mb"] = round(peak.sample() or 0.0, 1)
        out["rss_peak_mb"] = round(peak.peak_mb, 1)
        out["replies"] = dict(replies)
        out["stored"] = await _count(mongo, database)
    finally:
        out["exit_code"] = await stop_worker(worker)
        await mongo.drop_database(database)
    return out


async def gateway_run(infra: Infra, mongo: AsyncMongoClient[Document]) -> dict[str, Any]:
    database = "bench_memory_gateway"
    api_key = new_key()
    gateway, port = start_gateway(infra, database, api_key)
    out: dict[str, Any] = {"process": "gateway", "transport": "HTTP", "orders": ORDERS_SENT}
    statuses: Counter[int] = Counter()
    try:
        async with contextlib.AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(
                    httpx.AsyncClient(
                        base_url=f"http://127.0.0.1:{port}",
                        headers={"Authorization": f"Bearer {api_key}"},
                        timeout=120.0,
                    )
                )
                for _ in range(HTTP_CLIENTS)
            ]
            out["ready_s"] = round(await wait_serving(clients[0], gateway), 1)
            out["rss_start_mb"] = round(rss_mb(gateway.pid) or 0.0, 1)
            todo = iter(range(ORDERS_SENT))
            started = time.monotonic()
            with Peak(gateway.pid) as peak:

                async def client_loop(client: httpx.AsyncClient) -> None:
                    for i in todo:
                        response = await client.post(
                            f"{PREFIX}/place",
                            content=encode(large_order(i)),
                            headers={
                                "Content-Type": JSON,
                                "Idempotency-Key": f"mem-{uuid.uuid4().hex}",
                            },
                        )
                        statuses[response.status_code] += 1
                        if i % 500 == 0:
                            log(f"  gateway: {i:,} sent, RSS {peak.sample() or 0:.0f} MB")

                async with asyncio.TaskGroup() as group:
                    for client in clients:
                        group.create_task(client_loop(client))
                out["seconds"] = round(time.monotonic() - started, 1)
                await asyncio.sleep(SETTLE_SECONDS)
                out["rss_final_mb"] = round(peak.sample() or 0.0, 1)
            out["rss_peak_mb"] = round(peak.peak_mb, 1)
        out["statuses"] = {str(k): v for k, v in sorted(statuses.items())}
        out["stored"] = await _count(mongo, database)
    finally:
        out["exit_code"] = await stop_worker(gateway)
        await mongo.drop_database(database)
    return out


def _ok(run: dict[str, Any]) -> bool:
    return bool(run["stored"] == ORDERS_SENT and run["rss_peak_mb"] <= BOUND_MB)


async def main() -> int:
    body = encode(large_order(0))
    log(f"{ORDERS_SENT:,} orders of {len(body):,} bytes each, to the worker then the gateway")
    report: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "order_bytes": len(body),
        "metadata_keys": METADATA_KEYS,
        "bound_mb": BOUND_MB,
        "machine": machine(),
        "code": code_version(),
    }
    outdir = REPO_ROOT / ".bench"
    prefix = os.environ.get("BENCH_VHOST_PREFIX", "orders-bench")
    with infrastructure(outdir / "memory-logs", prefix) as infra:
        report["versions"] = versions(infra.mongo)
        mongo: AsyncMongoClient[Document] = AsyncMongoClient(infra.mongo.url)
        try:
            only = os.environ.get("BENCH_MEMORY_ONLY", "")
            runs = []
            if only in ("", "worker"):
                runs.append(await worker_run(infra, mongo))
            if only in ("", "gateway"):
                runs.append(await gateway_run(infra, mongo))
        finally:
            await mongo.close()
    report["runs"] = runs
    outdir.mkdir(exist_ok=True)
    (outdir / "memory.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"{'process':8} {'orders':>6} {'stored':>6} {'start MB':>8} {'peak MB':>8} "
        f"{'final MB':>8} {'seconds':>7}  ok"
    ]
    lines += [
        f"{run['process']:8} {run['orders']:>6} {run['stored']:>6} "
        f"{run['rss_start_mb']:>8} {run['rss_peak_mb']:>8} {run['rss_final_mb']:>8} "
        f"{run['seconds']:>7}  {'yes' if _ok(run) else 'NO'}"
        for run in runs
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0 if all(_ok(run) for run in runs) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
