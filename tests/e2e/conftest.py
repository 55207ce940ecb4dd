"""The worker as a subprocess (the way ``make run`` starts it) and a plain AMQP client.

Uses the fixtures ``amqp_url``, ``mongo_url`` and ``private_mongo`` from ``tests/conftest.py``.
Each test module gets its own worker and database; every test uses its own customer ids.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from .amqp_client import AmqpClient, DeadLetterReader, EventCollector
from .worker import (
    WORKER_LOG,
    Worker,
    WorkerLauncher,
    log_tail,
    new_database,
    start_worker,
    stop_worker,
    wait_until_ready,
)


@pytest.fixture(scope="module")
def worker_process(
    amqp_url: str,
    mongo_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[Worker]:
    """Start the worker for this module, with the module's ``WORKER_ENV`` (settings of its
    own, if it has any); SIGTERM (then SIGKILL) it at the end."""
    log_path = tmp_path_factory.mktemp("e2e-worker") / "worker.log"
    request.config.stash[WORKER_LOG] = log_path
    env: dict[str, str] = getattr(request.module, "WORKER_ENV", {})
    worker = start_worker(amqp_url, mongo_url, new_database(), log_path, env)
    try:
        yield worker
    finally:
        stop_worker(worker)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def amqp_client(amqp_url: str) -> AsyncIterator[AmqpClient]:
    client = await AmqpClient.connect(amqp_url)
    try:
        yield client
    finally:
        await client.close()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def worker(worker_process: Worker, amqp_client: AmqpClient) -> Worker:
    """The module's worker, once it answers an ``orders.statuses`` request."""
    await amqp_client.ensure_open()
    await wait_until_ready(amqp_client, worker_process)
    return worker_process


@pytest_asyncio.fixture(loop_scope="session")
async def client(worker: Worker, amqp_client: AmqpClient) -> AsyncIterator[AmqpClient]:
    """The client, once the worker answers; fails the test if the worker died during it."""
    duplicates_before = len(amqp_client.duplicate_replies)
    yield amqp_client
    if worker.process.poll() is not None:
        pytest.fail(
            f"worker died (exit code {worker.process.returncode}); log tail:\n{worker.log_tail()}"
        )
    duplicates = amqp_client.duplicate_replies[duplicates_before:]
    assert not duplicates, (
        "a request got more than one reply: "
        f"{[(m.correlation_id, m.body[:200]) for m in duplicates]}"
    )


@pytest_asyncio.fixture(loop_scope="session")
async def events(worker: Worker, amqp_client: AmqpClient) -> AsyncIterator[EventCollector]:
    """Collects every event published on ``orders.events`` from now on."""
    collector = await EventCollector.start(amqp_client.connection)
    try:
        yield collector
    finally:
        await collector.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def dead_letters(worker: Worker, amqp_client: AmqpClient) -> AsyncIterator[DeadLetterReader]:
    """Reads ``orders.dead`` (declared by the worker)."""
    reader = await DeadLetterReader.open(amqp_client.connection)
    try:
        yield reader
    finally:
        await reader.close()


@pytest.fixture
def launcher(
    amqp_url: str, mongo_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[WorkerLauncher]:
    """For tests that kill workers: no module worker runs while they use this."""
    launcher = WorkerLauncher(amqp_url, mongo_url, tmp_path, request.config)
    try:
        yield launcher
    finally:
        launcher.stop_all()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the tail of the current worker's log to every failing e2e test."""
    report = yield
    log_path = item.config.stash.get(WORKER_LOG, None)
    if report.failed and log_path is not None:
        report.sections.append(("e2e worker log (tail)", log_tail(log_path)))
    return report
