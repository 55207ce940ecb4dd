"""Start, probe and stop the worker the way ``make run`` does: a plain subprocess."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
import pytest

from devtools.embedded_mongo import free_port

from .amqp_client import COMMANDS_EXCHANGE, AmqpClient, decode_object

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
LOG_TAIL_LINES = 80

# Where the log of the most recently started worker is, for failure reports.
WORKER_LOG = pytest.StashKey[Path]()


def new_database() -> str:
    return f"e2e_{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True)
class Worker:
    process: subprocess.Popen[bytes]
    log_path: Path
    database: str
    http_port: int
    """Of its health and metrics endpoints on 127.0.0.1 (0: none)."""

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return log_tail(self.log_path, lines)


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def start_worker(
    amqp_url: str,
    mongo_url: str,
    database: str,
    log_path: Path,
    extra_env: Mapping[str, str] | None = None,
) -> Worker:
    """``faststream run --factory service.app:create_app`` from the repo root, its health
    and metrics endpoints on a free port (several workers run at once)."""
    env = {
        **os.environ,
        "ORDERS_AMQP_URL": amqp_url,
        "ORDERS_MONGO_URL": mongo_url,
        "ORDERS_MONGO_DATABASE": database,
        "ORDERS_PREFETCH": "32",
        "ORDERS_LOG_LEVEL": "INFO",
        "ORDERS_HTTP_HOST": "127.0.0.1",
        "ORDERS_HTTP_PORT": str(free_port()),
        **(extra_env or {}),
    }
    faststream = Path(sys.executable).parent / "faststream"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [str(faststream), "run", "--factory", "service.app:create_app"],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return Worker(process, log_path, database, int(env["ORDERS_HTTP_PORT"]))


def stop_worker(worker: Worker) -> int:
    """SIGTERM, then SIGKILL after 15 s; returns the exit code."""
    process = worker.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)
    return process.returncode


async def wait_for_exit(worker: Worker, timeout: float) -> int | None:  # noqa: ASYNC109
    """Wait (bounded) for the process to end without blocking the event loop."""
    try:
        return await asyncio.wait_for(asyncio.to_thread(worker.process.wait, timeout), timeout + 1)
    except (subprocess.TimeoutExpired, TimeoutError):
        return None


async def _exchange_exists(client: AmqpClient, name: str) -> bool:
    """Passive declare on a throw-away channel (a 404 closes the channel it happens on)."""
    channel = await client.connection.channel()
    try:
        await channel.get_exchange(name, ensure=True)
    except aio_pika.exceptions.ChannelClosed:
        return False
    finally:
        if not channel.is_closed:
            await channel.close()
    return True


async def wait_until_ready(client: AmqpClient, worker: Worker) -> None:
    """Ready = an ``orders.statuses`` request gets a reply.

    Requests published before the worker declared and bound its queues are unroutable and
    lost, so every try has a short timeout. Publishing to an exchange that does not exist
    yet would close the client's channel, hence the passive check first.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_TIMEOUT
    last_error = "no attempt made"
    while loop.time() < deadline:
        if worker.process.poll() is not None:
            pytest.fail(
                f"worker exited with code {worker.process.returncode} before it was ready; "
                f"log tail:\n{worker.log_tail()}"
            )
        if not await _exchange_exists(client, COMMANDS_EXCHANGE):
            last_error = f"exchange {COMMANDS_EXCHANGE!r} not declared yet"
            await asyncio.sleep(0.2)  # nothing to wait on yet: the exchange does not exist
            continue
        try:
            reply = await client.request_message("orders.statuses", {}, timeout=1.0)
        except TimeoutError as exc:
            last_error = str(exc)
            continue
        body = decode_object(reply.body)
        if body.get("success") is True:
            return
        last_error = f"unexpected reply {body!r}"
    pytest.fail(
        f"worker not ready within {READY_TIMEOUT}s ({last_error}); log tail:\n{worker.log_tail()}"
    )


@dataclass
class WorkerLauncher:
    """Starts extra workers (for crash and restart tests); stops them all at the end."""

    amqp_url: str
    mongo_url: str
    directory: Path
    config: pytest.Config
    workers: list[Worker] = field(default_factory=list)

    def start(self, database: str, extra_env: Mapping[str, str] | None = None) -> Worker:
        log_path = self.directory / f"worker-{len(self.workers) + 1}.log"
        self.config.stash[WORKER_LOG] = log_path
        worker = start_worker(self.amqp_url, self.mongo_url, database, log_path, extra_env)
        self.workers.append(worker)
        return worker

    def stop_all(self) -> None:
        for worker in self.workers:
            stop_worker(worker)
