"""The service on the local cluster, inside `make test` (not marked `cluster`): two workers,
a flow of placements and action chains, and the RabbitMQ node that holds the queue leaders
stopped in the middle of it, then started again. Nothing may be lost or doubled: every order
placed once, every action applied once and in its order's order, one event per change.

It is the chaos harness (devtools/chaos.py, `make cluster-chaos`) with a small workload and
one fault, so the ledger is the same one `make cluster-chaos` prints. The cluster is started
if it is not running, and then stopped once this module is done; the run has a vhost and a
database of its own, and its workers are stopped at the end.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools import chaos, cluster
from devtools.chaos_faults import FaultKind, PlannedFault
from devtools.chaos_infra import log_tail, snapshot_source
from devtools.chaos_ledger import Ledger, render_table
from devtools.chaos_workload import plan_workload

MESSAGES = 800
RATE = 40.0
"""About 20 s of flow: the node goes down a third of the way in and comes back during it."""
SEED = 20_261_206
NODE_STOP = PlannedFault(FaultKind.NODE_STOP, at_share=0.3, slot=1, pause=3.0)


@pytest.fixture(scope="module")
def local_cluster() -> Iterator[None]:
    """The local cluster, started unless it runs; stopped after the module if started here."""
    was_running = len(cluster.running_node_indexes()) == cluster.SIZE and (
        cluster.primary() is not None
    )
    began = time.monotonic()
    cluster.start()
    logging.getLogger("chaos").warning(
        "cluster %s in %.0fs", "reused" if was_running else "started", time.monotonic() - began
    )
    try:
        yield
    finally:
        chaos.restore_cluster()  # a run that failed halfway may have left a node down
        if not was_running:
            cluster.stop()


@pytest.mark.timeout(600)
async def test_nothing_is_lost_when_the_node_leading_the_queues_stops(
    local_cluster: None, tmp_path: Path
) -> None:
    config = chaos.Config(
        messages=MESSAGES,
        seed=SEED,
        rate=RATE,
        run_dir=tmp_path,
        vhost=f"orders-chaos-{uuid.uuid4().hex[:8]}",
        on_cluster=True,
    )
    snapshot_source(config.run_dir / "src")
    workload = plan_workload(config.messages, config.seed, config.vhost.removeprefix("orders-"))
    run = chaos.Run(config)
    try:
        report = await chaos.execute(run, workload, [NODE_STOP])
    finally:
        await run.close()
    ledger: Ledger = report["ledger"]
    logs = "\n".join(f"{path.name}:\n{log_tail(path)}" for path in worker_logs(tmp_path))
    table = render_table(ledger.rows())
    [fault] = report["faults"]
    assert fault["target"] in {each.name for each in cluster.NODES}, fault
    assert ledger.failures() == [], f"{fault}\n{table}\n{report['evidence']}\n{logs}"
    assert ledger.lost == ledger.doubled == 0
    assert ledger.placements_stored == ledger.placements_expected == len(workload.orders)
    assert ledger.transitions_applied == ledger.transitions_expected
    assert ledger.events_matched == ledger.events_expected
    assert report["unexpected_worker_exits"] == []


def worker_logs(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("worker-*.log"))
