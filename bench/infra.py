"""What a run stands on: its own mongod, a throw-away RabbitMQ vhost, worker subprocesses,
RSS sampling, and the description of the machine and the versions for the report."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aio_pika
from pymongo import MongoClient

from devtools import rabbitmq
from devtools.embedded_mongo import EmbeddedMongo, free_port, start_mongod

REPO_ROOT = Path(__file__).resolve().parents[1]
CHAOS_PATTERN = "devtools[.]chaos"
"""`pgrep -f` pattern for `make chaos` (it restarts the broker: never measure meanwhile)."""
CHAOS_POLL_SECONDS = 30.0
CHAOS_WAIT_SECONDS = 40 * 60.0
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


def log(message: str) -> None:
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def chaos_running() -> bool:
    result = subprocess.run(  # noqa: S603
        ["pgrep", "-f", CHAOS_PATTERN],  # noqa: S607 - pgrep from PATH, fixed arguments
        capture_output=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    return result.returncode == 0


def wait_for_no_chaos() -> None:
    """Poll every 30 s, for up to 40 minutes, until no `make chaos` runs."""
    deadline = time.monotonic() + CHAOS_WAIT_SECONDS
    while chaos_running():
        if time.monotonic() > deadline:
            raise SystemExit("`make chaos` is still running after 40 minutes; not measuring")
        log("`make chaos` is running (it restarts RabbitMQ); waiting 30 s")
        time.sleep(CHAOS_POLL_SECONDS)


@dataclass(frozen=True)
class Infra:
    mongo: EmbeddedMongo
    amqp_url: str
    vhost: str
    workdir: Path
    logdir: Path


@contextlib.contextmanager
def infrastructure(logdir: Path, vhost_prefix: str = "orders-bench") -> Iterator[Infra]:
    """A mongod on a free port with a temporary dbpath, and vhost `<vhost_prefix>-<hex>`;
    both removed at the end, also on errors."""
    rabbitmq.ensure_running()
    logdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="orders-bench-") as tmp:
        workdir = Path(tmp)
        log(f"starting mongod (dbpath {workdir / 'mongo'})")
        mongo = start_mongod(workdir / "mongo", free_port(), logpath=logdir / "mongod.log")
        try:
            vhost = f"{vhost_prefix}-{uuid.uuid4().hex[:8]}"
            try:
                _patiently(lambda: rabbitmq.create_vhost(vhost), f"create vhost {vhost}")
                url = (
                    f"amqp://guest:guest@{rabbitmq.DEFAULT_HOST}:{rabbitmq.DEFAULT_PORT}/"
                    f"{quote(vhost, safe='')}"
                )
                yield Infra(mongo, url, vhost, workdir, logdir)
            finally:
                _kill_leftovers()
                log(f"deleting vhost {vhost}")
                _delete_vhost(vhost)
        finally:
            _kill_leftovers()
            log("stopping mongod")
            mongo.stop()


def _patiently(action: Callable[[], None], what: str, patience: float = 300.0) -> None:
    """Run a rabbitmqctl `action`, retrying while the broker app is restarting (`make chaos`
    and the broker-restart test stop and start it)."""
    deadline = time.monotonic() + patience
    while True:
        try:
            action()
        except rabbitmq.RabbitMQError as exc:
            if time.monotonic() > deadline:
                raise
            log(f"cannot {what} yet ({str(exc).splitlines()[0][:100]}); retrying in 5 s")
            time.sleep(5.0)
        else:
            return


def _delete_vhost(name: str) -> None:
    _patiently(lambda: rabbitmq.delete_vhost(name), f"delete vhost {name}")


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    database: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"<cannot read {self.log_path}: {exc}>"
        return "\n".join(text.splitlines()[-lines:])


class WorkerFailed(RuntimeError):
    """The worker exited or never became ready."""


_STARTED: list[Worker] = []
"""Every worker this process started, so none outlives the run (see `_kill_leftovers`)."""


def _kill_leftovers() -> None:
    """SIGKILL any worker still alive: the last line of cleanup, when a run is interrupted
    (a worker whose broker and database went away may never finish a graceful stop)."""
    for worker in _STARTED:
        if worker.alive():
            log(f"killing leftover worker {worker.pid}")
            worker.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.process.wait(STOP_TIMEOUT)
    _STARTED.clear()


def start_worker(infra: Infra, database: str, name: str, prefetch: int = 256) -> Worker:
    """`<venv>/bin/faststream run --factory service.app:create_app`, as `make run` does."""
    env = {
        **os.environ,
        "ORDERS_AMQP_URL": infra.amqp_url,
        "ORDERS_MONGO_URL": infra.mongo.url,
        "ORDERS_MONGO_DATABASE": database,
        "ORDERS_PREFETCH": str(prefetch),
        "ORDERS_HTTP_PORT": "0",  # several workers on one host: no health endpoints to clash
    }
    log_path = infra.logdir / f"worker-{name}.log"
    faststream = Path(sys.executable).parent / "faststream"
    with log_path.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603 - our own venv's faststream, fixed arguments
            [str(faststream), "run", "--factory", "service.app:create_app"],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return track(Worker(process, database, log_path))


def track(worker: Worker) -> Worker:
    """Count `worker` (any service subprocess: the HTTP gateway too) among those killed at
    the end of the run if still alive."""
    _STARTED.append(worker)
    return worker


async def stop_worker(worker: Worker) -> int:
    """SIGTERM (the worker finishes what it holds), SIGKILL after 30 s."""
    process = worker.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(process.wait, STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            log(f"worker {worker.pid} did not stop within {STOP_TIMEOUT:.0f}s; killing it")
            process.kill()
            await asyncio.to_thread(process.wait, STOP_TIMEOUT)
    return process.returncode


async def wait_ready(infra: Infra, worker: Worker, timeout: float = READY_TIMEOUT) -> float:  # noqa: ASYNC109
    """Ready = an `orders.statuses` request is answered (as tests/e2e/worker.py probes);
    returns the seconds it took (start-up work such as index builds included)."""
    from bench.amqp import RpcClient  # noqa: PLC0415 - avoids an import cycle

    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + timeout
    while loop.time() < deadline:
        if not worker.alive():
            raise WorkerFailed(
                f"worker exited with {worker.process.returncode}:\n{worker.log_tail()}"
            )
        if not await _exchange_exists(infra.amqp_url, "orders"):
            await asyncio.sleep(0.2)
            continue
        async with RpcClient.connect(infra.amqp_url) as client:
            with contextlib.suppress(TimeoutError):
                reply = await client.call("orders.statuses", {}, timeout=1.0)
                if reply.body.get("success") is True:
                    return loop.time() - started
    raise WorkerFailed(f"worker not ready within {timeout:.0f}s:\n{worker.log_tail()}")


async def _exchange_exists(url: str, name: str) -> bool:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        try:
            await channel.get_exchange(name, ensure=True)
        except aio_pika.exceptions.ChannelClosed:
            return False
    return True


def rss_mb(pid: int) -> float | None:
    """VmRSS of `pid` in MiB, from /proc/<pid>/status."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


@dataclass
class RssSampler:
    """Samples the current worker's RSS every `interval` seconds, labelled with the phase."""

    interval: float = 2.0
    samples: list[dict[str, Any]] = field(default_factory=list)
    chaos: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when `make chaos` is seen running."""
    _worker: Worker | None = None
    _phase: str = ""
    _started: float = field(default_factory=time.monotonic)

    def watch(self, worker: Worker | None, phase: str) -> None:
        self._worker = worker
        self._phase = phase

    def phase(self, phase: str) -> None:
        self._phase = phase

    def sample(self) -> None:
        worker = self._worker
        if worker is None or not worker.alive():
            return
        value = rss_mb(worker.pid)
        if value is not None:
            self.samples.append(
                {
                    "t_s": round(time.monotonic() - self._started, 1),
                    "phase": self._phase,
                    "pid": worker.pid,
                    "rss_mb": round(value, 1),
                    "load1": loadavg(),
                }
            )

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[RssSampler]:
        async def loop() -> None:
            while True:
                self.sample()
                if not self.chaos.is_set() and await asyncio.to_thread(chaos_running):
                    log("`make chaos` started during the run: these figures are discarded")
                    self.chaos.set()
                await asyncio.sleep(self.interval)

        task = asyncio.create_task(loop(), name="rss-sampler")
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def loadavg() -> float | None:
    """The 1-minute load average: other work on the machine shows up here."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def code_version() -> dict[str, Any]:
    """Which code was measured: HEAD, and a digest of the (possibly uncommitted) service."""
    digest = hashlib.sha256()
    files = sorted((REPO_ROOT / "service").rglob("*.py")) + sorted(
        (REPO_ROOT / "schemas").rglob("*.py")
    )
    for path in files:
        digest.update(str(path.relative_to(REPO_ROOT)).encode())
        digest.update(path.read_bytes())
    found: dict[str, Any] = {"service_sha256": digest.hexdigest()[:16]}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607 - read-only
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        found["git_head"] = head.stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "service", "schemas"],  # noqa: S607
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        found["service_uncommitted_changes"] = bool(dirty.stdout.strip())
    return found


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "platform": platform.platform(),
        "load1_at_start": loadavg(),
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_total_mb"] = round(int(line.split()[1]) / 1024)
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    return info


def versions(mongo: EmbeddedMongo) -> dict[str, Any]:
    found: dict[str, Any] = {"python": platform.python_version()}
    for package in ("faststream", "pymongo", "aio-pika", "pydantic", "fastapi", "uvicorn", "httpx"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    client: MongoClient[dict[str, Any]]
    with MongoClient(mongo.direct_url, serverSelectionTimeoutMS=5000) as client:
        found["mongod"] = client.admin.command("buildInfo").get("version")
    try:
        result = subprocess.run(
            ["rabbitmqctl", "-q", "version"],  # noqa: S607 - as devtools.rabbitmq does
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            stdin=subprocess.DEVNULL,
        )
        found["rabbitmq"] = result.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        found["rabbitmq"] = None
    return found
