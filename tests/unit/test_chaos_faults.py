"""The chaos harness's fault schedules (devtools/chaos_faults.py): `make chaos` keeps its
schedule for a seed, `make cluster-chaos` has one of its own with every cluster fault."""

from __future__ import annotations

import pytest

from devtools.chaos import DEFAULT_SEED, parse_args
from devtools.chaos_faults import (
    CLUSTER_FAULTS,
    FIRST_AT,
    LAST_AT,
    NODE_DOWN_SECONDS,
    SINGLE_NODE_FAULTS,
    FaultKind,
    plan_faults,
)


def test_the_single_node_schedule_of_the_default_seed_is_the_recorded_one() -> None:
    """docs/reliability.md records this schedule for `make chaos`."""
    schedule = plan_faults(DEFAULT_SEED, 20_000, 2)
    assert [fault.kind for fault in schedule] == [
        FaultKind.WORKER_SIGTERM,
        FaultKind.WORKER_SIGTERM,
        FaultKind.MONGOD_STOP,
        FaultKind.RABBITMQ_RESTART,
        FaultKind.WORKER_SIGKILL,
        FaultKind.RABBITMQ_RESTART,
    ]
    assert {fault.kind for fault in schedule} == set(SINGLE_NODE_FAULTS)


def test_the_cluster_schedule_has_every_cluster_fault_in_the_load() -> None:
    schedule = plan_faults(DEFAULT_SEED, 8_000, 2, CLUSTER_FAULTS)
    assert sorted(fault.kind for fault in schedule) == sorted(CLUSTER_FAULTS)
    shares = [fault.at_share for fault in schedule]
    assert shares == sorted(shares)
    assert shares[0] >= FIRST_AT - 0.02
    assert shares[-1] <= LAST_AT + 0.02
    for fault in schedule:
        if fault.kind is not FaultKind.WORKER_SIGKILL:
            assert NODE_DOWN_SECONDS[0] <= fault.pause <= NODE_DOWN_SECONDS[1]
        assert fault.slot in (1, 2)


def test_cluster_mode_has_defaults_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CHAOS_MESSAGES", "CHAOS_RATE", "CHAOS_WORKERS"):
        monkeypatch.delenv(name, raising=False)
    single, on_cluster = parse_args([]), parse_args(["--cluster"])
    assert not single.on_cluster
    assert single.database == "chaos"
    assert on_cluster.on_cluster
    assert on_cluster.messages < single.messages
    assert on_cluster.database.startswith("chaos_")
    assert on_cluster.amqp_url.count(",") == 2  # every node of the cluster
    assert on_cluster.fault_schedule()[0].kind in CLUSTER_FAULTS
