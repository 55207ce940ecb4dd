"""Processes the chaos run owns or pokes: the worker processes and the local RabbitMQ."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from devtools import cluster
from devtools.embedded_mongo import free_port
from devtools.rabbitmq import DEFAULT_HOST, DEFAULT_PORT, port_open

log = logging.getLogger("chaos")

REPO_ROOT = Path(__file__).resolve().parents[1]
WORKER_PACKAGES = ("service", "schemas")
"""What the worker imports from the repository."""
READY_LINE = "started successfully"
"""What `faststream run` logs once the app's lifespan started and the subscribers consume."""

PARTITION_ACTIONS = "orders_partition_actions_total"
"""The worker's count of the actions it took from its partitions (its /metrics)."""
WORKER_READY_TIMEOUT = 90.0
WORKER_STOP_TIMEOUT = 45.0
RABBIT_TIMEOUT = 180.0


class ChaosError(RuntimeError):
    """The run could not be set up or a fault could not be injected or repaired."""


def snapshot_source(target: Path) -> Path:
    """Copy the worker's packages to `target`; the workers of the run start from there."""
    for package in WORKER_PACKAGES:
        shutil.copytree(
            REPO_ROOT / package, target / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    return target


def source_digest(root: Path) -> str:
    """A short digest of the worker's Python sources under `root`."""
    digest = hashlib.sha256()
    for package in WORKER_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(path.relative_to(root).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"


@dataclass
class Worker:
    slot: int
    incarnation: int
    process: subprocess.Popen[bytes]
    log_path: Path
    http_port: int = 0
    """Of its health and metrics endpoints on 127.0.0.1 (0: none)."""

    @property
    def name(self) -> str:
        return f"worker-{self.slot}#{self.incarnation}"

    def is_ready(self) -> bool:
        with contextlib.suppress(OSError):
            return READY_LINE in self.log_path.read_text(errors="replace")
        return False


@dataclass(frozen=True)
class UnexpectedExit:
    worker: str
    code: int | None
    at: float
    log_tail: str


@dataclass
class WorkerPool:
    """`faststream run --factory service.app:create_app` processes, one per slot.

    They run from `source_dir`, a copy of the code taken when the run started, so a worker
    restarted mid-run runs the same code even while the working tree is being edited.
    Each (re)start of a slot is a new incarnation with its own log file. Slots under a fault
    are `held`: their exit is intended. Any other exit is recorded and the slot restarted,
    as a process supervisor would. With `metrics`, each worker serves /metrics on a free
    port, read now and then (and before a worker is signalled) for its share of the actions.
    """

    env: dict[str, str]
    run_dir: Path
    source_dir: Path
    slots: int
    metrics: bool = False
    workers: dict[int, Worker] = field(default_factory=dict)
    held: set[int] = field(default_factory=set)
    unexpected_exits: list[UnexpectedExit] = field(default_factory=list)
    incarnations: int = 0
    actions_taken: dict[str, float] = field(default_factory=dict)
    """Worker name -> the last `orders_partition_actions_total` read from it."""

    def start(self, slot: int) -> Worker:
        self.incarnations += 1
        previous = self.workers.get(slot)
        incarnation = 1 if previous is None else previous.incarnation + 1
        log_path = self.run_dir / f"worker-{slot}.{incarnation}.log"
        faststream = Path(sys.executable).parent / "faststream"
        # several workers on one host: a free port each, or no health endpoints at all
        http_port = free_port() if self.metrics else 0
        with log_path.open("ab") as output:
            process = subprocess.Popen(
                [str(faststream), "run", "--factory", "service.app:create_app"],
                cwd=self.source_dir,
                env={
                    **os.environ,
                    "ORDERS_HTTP_HOST": "127.0.0.1",
                    "ORDERS_HTTP_PORT": str(http_port),
                    **self.env,
                },
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the harness, which stops them in turn
            )
        worker = Worker(slot, incarnation, process, log_path, http_port)
        self.workers[slot] = worker
        return worker

    def read_actions_taken(self) -> None:
        """Each live worker's count of partition actions, into `actions_taken`."""
        for worker in list(self.workers.values()):
            if worker.http_port and worker.process.poll() is None:
                count = partition_actions(worker.http_port)
                if count is not None:
                    self.actions_taken[worker.name] = count

    def action_shares(self) -> dict[str, float]:
        """Actions applied per slot (`worker-<n>`, every incarnation added up)."""
        shares: dict[str, float] = {}
        for name, count in self.actions_taken.items():
            slot = name.partition("#")[0]
            shares[slot] = shares.get(slot, 0.0) + count
        return shares

    def start_all(self) -> None:
        for slot in range(1, self.slots + 1):
            self.start(slot)

    async def wait_ready(self, *slots: int, timeout: float = WORKER_READY_TIMEOUT) -> float:  # noqa: ASYNC109
        """Seconds until the current worker of each slot (all by default) logged its start.

        A worker that crashes while starting is restarted by `supervise`, so this follows the
        slot, not one process; it gives up after `timeout`.
        """
        started = time.monotonic()
        while not all(self.workers[slot].is_ready() for slot in slots or self.workers):
            if time.monotonic() - started > timeout:
                tails = "\n".join(
                    f"{worker.name}:\n{log_tail(worker.log_path)}"
                    for worker in self.workers.values()
                    if not worker.is_ready()
                )
                raise ChaosError(f"workers not ready within {timeout:.0f}s\n{tails}")
            await asyncio.sleep(0.2)
        return time.monotonic() - started

    def signal(self, slot: int, signum: signal.Signals) -> Worker:
        worker = self.workers[slot]
        worker.process.send_signal(signum)
        return worker

    async def wait_exit(self, worker: Worker, timeout: float = WORKER_STOP_TIMEOUT) -> int | None:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        while worker.process.poll() is None:
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.1)
        return worker.process.returncode

    async def supervise(self, started: float) -> None:
        """Restart any worker that exited on its own; record the exit with its log tail."""
        rounds = 0
        while True:
            rounds += 1
            if self.metrics and rounds % 5 == 0:
                await asyncio.to_thread(self.read_actions_taken)
            for slot, worker in list(self.workers.items()):
                if slot in self.held or worker.process.poll() is None:
                    continue
                exit_ = UnexpectedExit(
                    worker.name,
                    worker.process.returncode,
                    round(time.monotonic() - started, 1),
                    log_tail(worker.log_path),
                )
                self.unexpected_exits.append(exit_)
                log.error("%s exited unexpectedly with %s; restarting", worker.name, exit_.code)
                self.start(slot)
            await asyncio.sleep(1.0)

    def stop_all(self) -> dict[str, int | None]:
        """SIGTERM every live worker, SIGKILL what does not exit in time; exit codes by name."""
        for worker in self.workers.values():
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        for worker in self.workers.values():
            try:
                codes[worker.name] = worker.process.wait(timeout=WORKER_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                codes[worker.name] = worker.process.wait()
        return codes


def partition_actions(port: int) -> float | None:
    """`orders_partition_actions_total` (all partitions) of the worker on `port`; None when
    it does not answer."""
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return None
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == PARTITION_ACTIONS
    )


async def rabbitmqctl(*args: str, timeout: float = RABBIT_TIMEOUT) -> str:  # noqa: ASYNC109
    """Run `rabbitmqctl -q ...` without blocking the event loop; stdout on success."""
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl",
        "-q",
        *args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(timeout):
            stdout, stderr = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise ChaosError(f"rabbitmqctl {' '.join(args)} timed out") from None
    if process.returncode != 0:
        raise ChaosError(
            f"rabbitmqctl {' '.join(args)} failed ({process.returncode}): "
            f"{(stderr or stdout).decode(errors='replace').strip()}"
        )
    return stdout.decode(errors="replace")


@dataclass
class BrokerControl:
    """Stops and starts the RabbitMQ application of the shared local broker."""

    stopped: bool = False

    async def stop_app(self) -> None:
        self.stopped = True
        await rabbitmqctl("stop_app")

    async def start_app(self) -> None:
        await rabbitmqctl("start_app")
        await self.wait_until_up()
        self.stopped = False

    @staticmethod
    async def wait_until_up(timeout: float = RABBIT_TIMEOUT) -> None:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        while not await asyncio.to_thread(port_open, DEFAULT_HOST, DEFAULT_PORT):
            if time.monotonic() > deadline:
                raise ChaosError(f"RabbitMQ did not come back within {timeout:.0f}s")
            await asyncio.sleep(0.5)
        await rabbitmqctl("await_startup")


async def queue_depths(vhost: str, *, on_cluster: bool = False) -> dict[str, int]:
    """Every queue of the vhost with its messages, ready plus unacknowledged (`on_cluster`:
    asked of a running node of the local cluster)."""
    args = ("list_queues", "-p", vhost, "--no-table-headers", "name", "messages")
    if on_cluster:
        try:
            index = cluster.running_node_indexes()[0]
            output = await asyncio.to_thread(cluster.rabbitmqctl, index, *args, timeout=30)
        except (IndexError, cluster.ClusterError) as exc:
            raise ChaosError(f"cannot list the queues of {vhost}: {exc}") from exc
    else:
        output = await rabbitmqctl(*args, timeout=30)
    depths: dict[str, int] = {}
    for line in output.splitlines():
        name, _, count = line.rpartition("\t")
        if name and count.isdigit():
            depths[name] = int(count)
    return depths
