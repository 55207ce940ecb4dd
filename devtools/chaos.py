"""Chaos run: a fixed workload through two workers while processes and servers fail.

    uv run python -m devtools.chaos [--messages N] [--seed S]     (or: make chaos)
    uv run python -m devtools.chaos --cluster                   (or: make cluster-chaos)

Sets up a vhost `orders-chaos-<hex>`, its own mongod and two worker processes; publishes
N commands (placements and, per order, a valid chain of actions); meanwhile kills and
terminates workers, stops mongod and restarts RabbitMQ on a schedule derived from the
seed; waits until the system is quiescent; then builds a ledger from MongoDB and the
events, prints it, and writes it to `.chaos/latest.json`. Exit status 1 when a guarantee
failed (something lost, doubled, or a change without exactly one event), 2 when the run
itself could not be carried out.

With `--cluster` it runs on the local cluster (devtools/cluster.py, started if it is not
running, and then stopped at the end): the vhost on the 3-node RabbitMQ cluster, a database
`chaos_<hex>` on replica set rs-cluster, the workers given every node, and faults of its own
(`CLUSTER_FAULTS`): the node holding the queue leaders stopped and killed, the MongoDB
primary killed, a worker killed.

The worker is a black box: nothing from `service/` is imported; the ledger reads MongoDB.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import PyMongoError

from devtools import cluster, rabbitmq
from devtools.chaos_amqp import (
    DEAD_QUEUE,
    HISTORY_STREAM,
    EventRecorder,
    Publisher,
    connect_any,
    drain_dead_letters,
    statuses_reply,
)
from devtools.chaos_faults import (
    CLUSTER_FAULTS,
    SINGLE_NODE_FAULTS,
    FaultInjector,
    PlannedFault,
    plan_faults,
)
from devtools.chaos_infra import (
    REPO_ROOT,
    BrokerControl,
    ChaosError,
    WorkerPool,
    queue_depths,
    snapshot_source,
    source_digest,
)
from devtools.chaos_ledger import Ledger, build_ledger, render_table
from devtools.chaos_producer import IdBook, Pacer, Producer, report_progress, run_load
from devtools.chaos_report import (
    CHAOS_DIR,
    log_summary,
    print_report,
    source_state,
    write_report,
)
from devtools.chaos_workload import Workload, plan_workload
from devtools.embedded_mongo import EmbeddedMongo, free_port, start_mongod
from service.store.outbox import backlog

log = logging.getLogger("chaos")

DEFAULT_MESSAGES = 20_000
DEFAULT_SEED = 20_251_127
DEFAULT_RATE = 100.0
"""Messages per second: spreads a 20,000-message load over minutes, so faults hit it."""
CLUSTER_MESSAGES = 8_000
CLUSTER_RATE = 50.0
"""On the cluster: a node restart takes longer, so fewer messages, more slowly."""
WORKERS = 2
PREFETCH = 64
DATABASE = "chaos"
AMQP_BASE = "amqp://guest:guest@127.0.0.1:5672/"
QUIESCENCE_TIMEOUT = 300.0
QUIET_SECONDS = 5.0
READY_TIMEOUT = 90.0


@dataclass(frozen=True)
class Config:
    messages: int
    seed: int
    rate: float
    run_dir: Path
    vhost: str
    on_cluster: bool = False
    workers: int = WORKERS

    @property
    def amqp_url(self) -> str:
        if self.on_cluster:
            return cluster.amqp_url(self.vhost)
        return AMQP_BASE + quote(self.vhost, safe="")

    @property
    def database(self) -> str:
        """On the cluster's long-lived replica set, a database of the run's own."""
        return f"chaos_{self.vhost.rpartition('-')[2]}" if self.on_cluster else DATABASE

    def fault_schedule(self) -> list[PlannedFault]:
        kinds = CLUSTER_FAULTS if self.on_cluster else SINGLE_NODE_FAULTS
        return plan_faults(self.seed, self.messages, self.workers, kinds)


def parse_args(argv: Sequence[str] | None) -> Config:
    parser = argparse.ArgumentParser(prog="python -m devtools.chaos", description=__doc__)
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="on the local cluster (make cluster), with the cluster's faults",
    )
    parser.add_argument(
        "--messages",
        type=int,
        default=os.environ.get("CHAOS_MESSAGES"),
        help=f"commands in the workload (default: $CHAOS_MESSAGES or {DEFAULT_MESSAGES}, "
        f"{CLUSTER_MESSAGES} on the cluster)",
    )
    parser.add_argument("--seed", type=int, default=int(os.environ.get("CHAOS_SEED", DEFAULT_SEED)))
    parser.add_argument(
        "--rate",
        type=float,
        default=os.environ.get("CHAOS_RATE"),
        help="messages per second the producer publishes at most (0: as fast as it can; "
        f"default: $CHAOS_RATE or {DEFAULT_RATE:.0f}, {CLUSTER_RATE:.0f} on the cluster)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("CHAOS_WORKERS", WORKERS)),
        help=f"worker processes (default: $CHAOS_WORKERS or {WORKERS})",
    )
    args = parser.parse_args(argv)
    messages = int(args.messages or (CLUSTER_MESSAGES if args.cluster else DEFAULT_MESSAGES))
    rate = float(args.rate if args.rate is not None else
                 (CLUSTER_RATE if args.cluster else DEFAULT_RATE))  # fmt: skip
    if messages < 10:
        parser.error("--messages must be at least 10")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    vhost = f"orders-chaos-{uuid.uuid4().hex[:8]}"
    return Config(
        messages, args.seed, rate, CHAOS_DIR / stamp, vhost, bool(args.cluster), args.workers
    )


@dataclass
class Run:
    """Everything one chaos run started; `close()` stops and removes it all."""

    config: Config
    broker: BrokerControl = field(default_factory=BrokerControl)
    mongo: EmbeddedMongo | None = None
    mongo_dir: Path | None = None
    pool: WorkerPool | None = None
    client: AsyncMongoClient[dict[str, Any]] | None = None
    recorder: EventRecorder | None = None
    publisher: Publisher | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    vhost_created: bool = False
    origin: float = field(default_factory=time.monotonic)
    """When the workers were first started: fault and crash times count from here."""
    worker_exit_codes: dict[str, int | None] = field(default_factory=dict)

    async def close(self) -> None:
        """Each step runs even when an earlier one failed; failures are logged."""
        steps = (
            self._cancel_tasks,
            self._restore_broker,
            self._stop_workers,
            self._close_clients,
            self._stop_mongod,
            self._drop_database,
            self._delete_vhost,
        )
        for step in steps:
            try:
                await step()
            except Exception:
                log.exception("clean-up step %s failed", step.__name__)

    async def _cancel_tasks(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _restore_broker(self) -> None:
        if self.broker.stopped:  # interrupted in the middle of a broker restart
            await self.broker.start_app()
        if self.config.on_cluster:  # interrupted while a node or member was down
            await asyncio.to_thread(restore_cluster)

    async def _stop_workers(self) -> None:
        if self.pool is not None:
            if self.pool.metrics:
                await asyncio.to_thread(self.pool.read_actions_taken)
            self.worker_exit_codes = await asyncio.to_thread(self.pool.stop_all)

    async def _close_clients(self) -> None:
        for closeable in (self.publisher, self.recorder):
            if closeable is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(closeable.close(), 10)

    async def _drop_database(self) -> None:
        if self.client is not None:
            if self.config.on_cluster:
                await self.client.drop_database(self.config.database)
            await self.client.close()

    async def _stop_mongod(self) -> None:
        if self.mongo is not None:
            await asyncio.to_thread(self.mongo.stop)
        if self.mongo_dir is not None:
            shutil.rmtree(self.mongo_dir, ignore_errors=True)

    async def _delete_vhost(self) -> None:
        if self.vhost_created:
            if self.config.on_cluster:
                await asyncio.to_thread(cluster.delete_vhost, self.config.vhost)
            else:
                await asyncio.to_thread(rabbitmq.delete_vhost, self.config.vhost)
            log.info("deleted vhost %s", self.config.vhost)


def restore_cluster() -> None:
    """Start every node and member of the local cluster that is down."""
    for index in range(1, cluster.SIZE + 1):
        cluster.start_node(index)
        cluster.start_member(index)


async def start_infrastructure(run: Run) -> None:
    config = run.config
    if config.on_cluster:
        mongo_url = await start_on_cluster(config)
    else:
        mongo_url = await start_single_node(run)
    run.vhost_created = True
    run.client = AsyncMongoClient(mongo_url, serverSelectionTimeoutMS=5000)
    log.info("vhost %s, MongoDB %s, logs in %s", config.vhost, mongo_url, config.run_dir)
    run.pool = WorkerPool(
        env={
            "ORDERS_AMQP_URL": config.amqp_url,
            "ORDERS_MONGO_URL": mongo_url,
            "ORDERS_MONGO_DATABASE": config.database,
            "ORDERS_PREFETCH": str(PREFETCH),
            "ORDERS_LOG_LEVEL": "INFO",
        },
        run_dir=config.run_dir,
        source_dir=config.run_dir / "src",
        slots=config.workers,
        metrics=True,
    )
    run.pool.start_all()
    run.origin = time.monotonic()
    run.tasks.append(asyncio.create_task(run.pool.supervise(run.origin)))
    await run.pool.wait_ready()
    await wait_for_replies(config.amqp_url)
    log.info("%d workers ready", config.workers)


async def start_single_node(run: Run) -> str:
    """The local RabbitMQ (started if needed), the run's vhost and a mongod of its own."""
    await asyncio.to_thread(rabbitmq.ensure_running)
    await asyncio.to_thread(rabbitmq.create_vhost, run.config.vhost)
    run.mongo_dir = Path(tempfile.mkdtemp(prefix="chaos-mongo-"))
    run.mongo = await asyncio.to_thread(
        start_mongod, run.mongo_dir, free_port(), logpath=run.config.run_dir / "mongod.log"
    )
    return run.mongo.url


async def start_on_cluster(config: Config) -> str:
    """The run's vhost on the local cluster (running: see `main_async`); its replica set."""
    try:
        await asyncio.to_thread(cluster.create_vhost, config.vhost)
    except cluster.ClusterError as exc:
        raise ChaosError(f"cannot create vhost {config.vhost} on the cluster: {exc}") from exc
    return cluster.mongo_url()


async def wait_for_replies(url: str) -> None:
    """Ready = an `orders.statuses` request gets a reply."""
    connection = await connect_any(url)
    async with connection:
        channel = await connection.channel()
        deadline = time.monotonic() + READY_TIMEOUT
        while not await statuses_reply(channel, timeout=2.0):
            if time.monotonic() > deadline:
                raise ChaosError(f"no reply to orders.statuses within {READY_TIMEOUT:.0f}s")


@dataclass(frozen=True)
class Quiescence:
    reached: bool
    seconds: float
    last_state: str


async def wait_quiescent(run: Run, orders: AsyncCollection[dict[str, Any]]) -> Quiescence:
    """Work queues empty, every committed event published (the events feed's backlog), and
    no event for a few seconds (bounded)."""
    assert run.recorder is not None
    started = time.monotonic()
    last_report = 0.0
    state = "not checked"
    while True:
        try:
            depths = await queue_depths(run.config.vhost, on_cluster=run.config.on_cluster)
            # The event history (a stream) keeps every event: it is never drained.
            kept = (DEAD_QUEUE, HISTORY_STREAM)
            busy = {name: n for name, n in depths.items() if n and name not in kept}
            unpublished = await backlog(orders.database)
        except (ChaosError, PyMongoError) as exc:
            busy, unpublished = {"?": -1}, -1
            state = f"cannot check: {exc}"
        else:
            silent = time.monotonic() - run.recorder.last_delivery
            state = f"queues with messages {busy or '{}'}, events not published {unpublished}, "
            state += f"no event for {silent:.0f}s"
            if not busy and unpublished == 0 and silent >= QUIET_SECONDS:
                return Quiescence(True, round(time.monotonic() - started, 1), state)
        elapsed = time.monotonic() - started
        if elapsed > QUIESCENCE_TIMEOUT:
            return Quiescence(False, round(elapsed, 1), state)
        if elapsed - last_report >= 10:
            log.info("waiting for quiescence: %s", state)
            last_report = elapsed
        await asyncio.sleep(1.0)


async def read_orders(orders: AsyncCollection[dict[str, Any]]) -> list[dict[str, Any]]:
    projection = {
        "order_id": 1,
        "idempotency_key": 1,
        "status": 1,
        "status_history.from": 1,
        "status_history.to": 1,
        "metadata": 1,
        "version": 1,
    }
    return await orders.find({}, projection).to_list(None)


async def execute(run: Run, workload: Workload, schedule: list[PlannedFault]) -> dict[str, Any]:
    """Set up, load and break the system, wait for it to settle, and build the report."""
    config = run.config
    started = time.monotonic()
    await start_infrastructure(run)
    assert run.pool is not None
    assert run.client is not None
    orders = run.client[config.database]["orders"]
    ids = IdBook()
    run.recorder = await EventRecorder.start(config.amqp_url, ids, quorum=config.on_cluster)
    run.publisher = await Publisher.open(config.amqp_url)
    producer = Producer(workload, run.publisher, ids, orders, Pacer(config.rate))
    injector = FaultInjector(
        run.pool, run.mongo, run.broker, producer.progress, run.origin, vhost=config.vhost
    )
    load_started = time.monotonic()
    run.tasks.append(asyncio.create_task(report_progress(producer, run.recorder)))
    faults = asyncio.create_task(injector.run(schedule))
    run.tasks.append(faults)
    completed = await run_load(producer, run.recorder)
    log.info("producer done in %.0fs", time.monotonic() - load_started)
    if completed:
        await faults  # the ones still due; a fault that cannot be repaired ends the run
    else:
        faults.cancel()
    quiet = await wait_quiescent(run, orders)
    log.info("quiescent: %s after %.0fs (%s)", quiet.reached, quiet.seconds, quiet.last_state)
    dead_letters = await drain_dead_letters(config.amqp_url)
    ledger, evidence = build_ledger(
        workload,
        producer.produced(),
        docs=await read_orders(orders),
        events=run.recorder.events,
        deliveries=run.recorder.deliveries,
        dead_letters=dead_letters,
    )
    ledger.quiescent = quiet.reached
    ledger.events_unpublished = await backlog(orders.database)
    ledger.load_completed = completed
    ledger.worker_exits_unexpected = len(run.pool.unexpected_exits)
    outside = injector.unplanned_broker_outages(run.recorder.connection_losses)
    ledger.broker_outages_not_injected = len(outside)
    return {
        "ledger": ledger,
        "load_seconds": round(time.monotonic() - load_started, 1),
        "setup_seconds": round(load_started - started, 1),
        "quiescence": {
            "reached": quiet.reached,
            "seconds": quiet.seconds,
            "state": quiet.last_state,
        },
        "faults": [record.as_dict() for record in injector.records],
        "broker_connection_lost_outside_faults_at_s": outside,
        "evidence": evidence.as_dict(),
        "unexpected_worker_exits": [vars(e) for e in run.pool.unexpected_exits],
        "worker_incarnations": run.pool.incarnations,
    }


async def start_cluster() -> bool:
    """Start the local cluster unless it runs; whether this run started it."""
    running = await asyncio.to_thread(cluster.running_node_indexes)
    was_running = len(running) == cluster.SIZE and (
        await asyncio.to_thread(cluster.primary) is not None
    )
    began = time.monotonic()
    try:
        await asyncio.to_thread(cluster.start)
    except (cluster.ClusterError, PyMongoError, OSError) as exc:
        raise ChaosError(f"the local cluster did not start: {exc}") from exc
    log.info(
        "cluster %s in %.0fs",
        "already running" if was_running else "started",
        time.monotonic() - began,
    )
    return not was_running


def setup_logging(run_dir: Path) -> None:
    """The harness's own lines on stderr and in chaos.log; library noise (reconnects) only there."""
    run_dir.mkdir(parents=True, exist_ok=True)
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    to_file = logging.FileHandler(run_dir / "chaos.log")
    to_terminal = logging.StreamHandler(sys.stderr)
    for handler in (to_file, to_terminal):
        handler.setFormatter(formatter)
    logging.basicConfig(level=logging.WARNING, handlers=[to_file])
    log.addHandler(to_terminal)
    log.setLevel(logging.INFO)


def stop_on_signals(task: asyncio.Task[Any]) -> None:
    """Ctrl-C or SIGTERM cancel the run once; repeats do not interrupt the clean-up."""

    def stop(signum: signal.Signals) -> None:
        if task.cancelling():
            log.warning(
                "%s: still stopping what the run started (SIGKILL abandons it)", signum.name
            )
            return
        log.warning("%s: stopping the run", signum.name)
        task.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, stop, signum)


async def main_async(config: Config) -> int:
    current = asyncio.current_task()
    assert current is not None
    stop_on_signals(current)
    began, began_at = time.monotonic(), datetime.now(UTC).isoformat(timespec="seconds")
    source = source_state(snapshot_source(config.run_dir / "src"))
    workload = plan_workload(config.messages, config.seed, config.vhost.removeprefix("orders-"))
    schedule = config.fault_schedule()
    log.info(
        "workload: %d orders, %d messages at %s/s, seed %d; faults: %s",
        len(workload.orders),
        config.messages,
        config.rate or "unlimited ",
        config.seed,
        ", ".join(f"{f.kind}@{f.at_share:.0%}" for f in schedule),
    )
    run = Run(config)
    started_cluster = False
    try:
        if config.on_cluster:
            started_cluster = await start_cluster()
        report = await execute(run, workload, schedule)
    except ChaosError:
        log.exception("the chaos run could not be carried out")
        return 2
    finally:
        await run.close()
        if started_cluster:
            log.info("stopping the cluster this run started")
            await asyncio.to_thread(cluster.stop)
    ledger: Ledger = report.pop("ledger")
    report = {
        "messages": config.messages,
        "seed": config.seed,
        "rate": config.rate,
        "vhost": config.vhost,
        "run_dir": str(config.run_dir),
        "started_at": began_at,
        "wall_seconds": round(time.monotonic() - began, 1),
        "failures": ledger.failures(),
        "ledger": ledger.as_dict(),
        "table": render_table(ledger.rows()),
        **report,
        "worker_exit_codes": run.worker_exit_codes,
        "on_cluster": config.on_cluster,
        "actions_by_worker": run.pool.action_shares() if run.pool else {},
        "source": source,
        "working_tree_changed_during_run": source["sha256"] != source_digest(REPO_ROOT),
        "worker_log_lines": log_summary(config.run_dir),
    }
    write_report(config.run_dir, report)
    print_report(report, ledger)
    return 1 if ledger.failures() else 0


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    setup_logging(config.run_dir)
    try:
        return asyncio.run(main_async(config))
    except (KeyboardInterrupt, asyncio.CancelledError):  # Ctrl-C, or SIGTERM
        log.warning("interrupted; everything the run started has been stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
