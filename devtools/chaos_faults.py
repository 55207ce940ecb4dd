"""The fault schedule (derived from the seed) and the injector that carries it out.

Faults are triggered by progress (the share of the workload published so far), not by
wall time, so the same seed hits the same point of the workload on a fast or slow machine.
They run one after another; each is repaired before the next one starts.
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from devtools import cluster
from devtools.chaos_infra import BrokerControl, ChaosError, WorkerPool
from devtools.embedded_mongo import EmbeddedMongo

log = logging.getLogger("chaos")

MONGO_OUTAGE_SECONDS = 10.0
FIRST_AT, LAST_AT = 0.10, 0.85
"""Faults happen between these shares of the workload."""


class FaultKind(StrEnum):
    WORKER_SIGKILL = "worker_sigkill"
    WORKER_SIGTERM = "worker_sigterm"
    MONGOD_STOP = "mongod_stop"
    RABBITMQ_RESTART = "rabbitmq_restart"
    # on the local cluster (devtools/cluster.py)
    NODE_STOP = "node_stop"
    NODE_KILL = "node_kill"
    PRIMARY_KILL = "primary_kill"


SINGLE_NODE_FAULTS = (
    FaultKind.WORKER_SIGKILL,
    FaultKind.WORKER_SIGTERM,
    FaultKind.MONGOD_STOP,
    FaultKind.RABBITMQ_RESTART,
)
"""`make chaos`: the local RabbitMQ and a mongod of the run's own."""
CLUSTER_FAULTS = (
    FaultKind.NODE_STOP,
    FaultKind.NODE_KILL,
    FaultKind.PRIMARY_KILL,
    FaultKind.WORKER_SIGKILL,
)
"""`make cluster-chaos`: the RabbitMQ node that holds the queue leaders stopped cleanly, the
same killed with SIGKILL (each started again), the MongoDB primary killed (a failover; the
member started again later), a worker killed (and started again)."""
BROKER_FAULTS = frozenset({FaultKind.RABBITMQ_RESTART, FaultKind.NODE_STOP, FaultKind.NODE_KILL})
NODE_DOWN_SECONDS = (5.0, 10.0)
"""How long a cluster node or member stays down (bounds; the seed picks)."""


@dataclass(frozen=True)
class PlannedFault:
    kind: FaultKind
    at_share: float
    """Injected once this share of the workload's messages has been published."""
    slot: int
    """The worker slot, for worker faults."""
    pause: float
    """Seconds the thing stays down before it is started again."""


@dataclass
class FaultRecord:
    kind: str
    target: str
    at_share: float
    started_at: str
    offset_s: float
    down_s: float = 0.0
    recovered_s: float = 0.0
    """From the fault until the thing answers again (worker ready, port open, primary)."""
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_faults(
    seed: int, messages: int, workers: int, kinds: Sequence[FaultKind] = SINGLE_NODE_FAULTS
) -> list[PlannedFault]:
    """Every kind once, plus one extra fault per 10,000 messages; order and timing by seed."""
    rng = random.Random(f"faults-{seed}")  # noqa: S311 - reproducible, not secret
    kinds = list(kinds)
    kinds += [rng.choice(kinds) for _ in range(messages // 10_000)]
    rng.shuffle(kinds)
    step = (LAST_AT - FIRST_AT) / max(len(kinds) - 1, 1)
    return [
        PlannedFault(
            kind=kind,
            at_share=round(FIRST_AT + i * step + rng.uniform(-0.02, 0.02), 3),
            slot=rng.randint(1, workers),
            pause=_pause(rng, kind),
        )
        for i, kind in enumerate(kinds)
    ]


def _pause(rng: random.Random, kind: FaultKind) -> float:
    if kind is FaultKind.MONGOD_STOP:
        return MONGO_OUTAGE_SECONDS
    if kind in (FaultKind.NODE_STOP, FaultKind.NODE_KILL, FaultKind.PRIMARY_KILL):
        return round(rng.uniform(*NODE_DOWN_SECONDS), 1)
    return round(rng.uniform(2, 5), 1)


@dataclass
class FaultInjector:
    pool: WorkerPool
    mongo: EmbeddedMongo | None
    """The run's own mongod (None on the cluster)."""
    broker: BrokerControl
    progress: Callable[[], float]
    """Share of the workload published so far, 0..1."""
    started: float = field(default_factory=time.monotonic)
    records: list[FaultRecord] = field(default_factory=list)
    vhost: str = "/"
    """The run's vhost: on the cluster, whose queue leaders say which node to fail."""

    async def run(self, schedule: list[PlannedFault]) -> None:
        for fault in schedule:
            while self.progress() < fault.at_share:  # noqa: ASYNC110 - polls a counter
                await asyncio.sleep(0.2)
            await self.inject(fault)

    async def inject(self, fault: PlannedFault) -> None:
        record = FaultRecord(
            kind=str(fault.kind),
            target=_target(fault),
            at_share=fault.at_share,
            started_at=datetime.now(UTC).isoformat(timespec="seconds"),
            offset_s=round(time.monotonic() - self.started, 1),
        )
        self.records.append(record)
        log.warning(
            "FAULT %s on %s at +%.1fs (%.0f%% published)",
            record.kind,
            record.target,
            record.offset_s,
            100 * self.progress(),
        )
        began = time.monotonic()
        match fault.kind:
            case FaultKind.WORKER_SIGKILL | FaultKind.WORKER_SIGTERM:
                await self._worker_fault(fault, record)
            case FaultKind.MONGOD_STOP:
                await self._mongod_fault(fault, record)
            case FaultKind.RABBITMQ_RESTART:
                await self._rabbitmq_fault(fault, record)
            case FaultKind.NODE_STOP | FaultKind.NODE_KILL:
                await _cluster_call(self._node_fault, fault, record)
            case FaultKind.PRIMARY_KILL:
                await _cluster_call(self._primary_fault, fault, record)
        record.recovered_s = round(time.monotonic() - began, 1)
        log.warning(
            "FAULT %s repaired after %.1fs %s", record.kind, record.recovered_s, record.detail
        )

    def unplanned_broker_outages(self, losses: list[float]) -> list[float]:
        """Seconds (from `started`) at which the broker went away without a fault of this run.

        `losses` are the monotonic times a client connection was lost. The local broker is
        shared: somebody else restarting it is a fault the schedule did not plan.
        """
        windows = [
            (record.offset_s - 1, record.offset_s + record.recovered_s + 3)
            for record in self.records
            if record.kind in BROKER_FAULTS
        ]
        outside: list[float] = []
        previous = float("-inf")
        for loss in sorted(losses):
            t = round(loss - self.started, 1)
            if not any(start <= t <= end for start, end in windows):
                if t - previous > 5:  # later ones: failed reconnect attempts of the same outage
                    outside.append(t)
                previous = t
        return outside

    async def _worker_fault(self, fault: PlannedFault, record: FaultRecord) -> None:
        signum = signal.SIGKILL if fault.kind is FaultKind.WORKER_SIGKILL else signal.SIGTERM
        self.pool.held.add(fault.slot)
        if self.pool.metrics:  # its count of actions, which dies with it
            await asyncio.to_thread(self.pool.read_actions_taken)
        try:
            worker = self.pool.signal(fault.slot, signum)
            began = time.monotonic()
            code = await self.pool.wait_exit(worker)
            if code is None:  # did not stop within the graceful timeout
                worker.process.kill()
                code = await self.pool.wait_exit(worker)
                record.detail = "did not stop on SIGTERM in time, killed; "
            record.detail += (
                f"{worker.name} exited with {code} after {time.monotonic() - began:.1f}s"
            )
            await asyncio.sleep(fault.pause)
            record.down_s = round(time.monotonic() - began, 1)
            self.pool.start(fault.slot)
        finally:
            self.pool.held.discard(fault.slot)
        ready = await self.pool.wait_ready(fault.slot)
        record.detail += f"; {self.pool.workers[fault.slot].name} ready in {ready:.1f}s"

    async def _node_fault(self, fault: PlannedFault, record: FaultRecord) -> None:
        """Stop (`rabbitmqctl stop`) or SIGKILL the node that holds the most queue leaders
        of the run's vhost; start it again after the pause."""
        homes = await asyncio.to_thread(cluster.queue_nodes, self.vhost)
        index = Counter(homes.values()).most_common(1)[0][0] if homes else 1
        name = cluster.node(index).name
        record.target = name
        held = sum(home == index for home in homes.values())
        began = time.monotonic()
        try:
            if fault.kind is FaultKind.NODE_STOP:
                await asyncio.to_thread(cluster.stop_node, index)
                how = "stopped (rabbitmqctl stop)"
            else:
                pid = await asyncio.to_thread(cluster.kill_node, index)
                how = f"killed (SIGKILL to pid {pid})"
            await asyncio.sleep(fault.pause)
        finally:
            record.down_s = round(time.monotonic() - began, 1)
            await asyncio.to_thread(cluster.start_node, index)
        now = Counter((await asyncio.to_thread(cluster.queue_nodes, self.vhost)).values())
        record.detail = (
            f"{name} held {held} of {len(homes)} queues (leaders), {how}, started again; "
            f"queues per node now {dict(sorted(now.items()))}"
        )

    async def _primary_fault(self, fault: PlannedFault, record: FaultRecord) -> None:
        """SIGKILL the replica set's primary; wait for the election; start it again later."""
        index = await asyncio.to_thread(cluster.wait_for_primary, 60)
        record.target = f"m{index}"
        began = time.monotonic()
        try:
            pid = await asyncio.to_thread(cluster.kill_member, index)
            elected = await asyncio.to_thread(cluster.wait_for_primary, 60)
            election = time.monotonic() - began
            await asyncio.sleep(fault.pause)
        finally:
            record.down_s = round(time.monotonic() - began, 1)
            await asyncio.to_thread(cluster.start_member, index)
        record.detail = (
            f"mongod m{index} (pid {pid}) killed, m{elected} primary after {election:.1f}s; "
            f"m{index} started again as a member"
        )

    async def _mongod_fault(self, fault: PlannedFault, record: FaultRecord) -> None:
        assert self.mongo is not None, "mongod_stop needs the run's own mongod"
        began = time.monotonic()
        await asyncio.to_thread(self.mongo.stop)
        await asyncio.sleep(fault.pause)
        record.down_s = round(time.monotonic() - began, 1)
        await asyncio.to_thread(self.mongo.restart)
        record.detail = f"mongod on port {self.mongo.port} stopped, restarted on the same dbpath"

    async def _rabbitmq_fault(self, fault: PlannedFault, record: FaultRecord) -> None:
        began = time.monotonic()
        try:
            await self.broker.stop_app()
            await asyncio.sleep(fault.pause)
        finally:
            record.down_s = round(time.monotonic() - began, 1)
            await self.broker.start_app()
        record.detail = "rabbitmqctl stop_app / start_app; port 5672 answers again"


async def _cluster_call(
    step: Callable[[PlannedFault, FaultRecord], Awaitable[None]],
    fault: PlannedFault,
    record: FaultRecord,
) -> None:
    """A cluster fault; a node or member that cannot be failed or started ends the run."""
    try:
        await step(fault, record)
    except cluster.ClusterError as exc:
        raise ChaosError(f"{fault.kind} on {record.target}: {exc}") from exc


def _target(fault: PlannedFault) -> str:
    match fault.kind:
        case FaultKind.WORKER_SIGKILL | FaultKind.WORKER_SIGTERM:
            return f"worker-{fault.slot}"
        case FaultKind.MONGOD_STOP:
            return "mongod"
        case FaultKind.RABBITMQ_RESTART:
            return "rabbitmq"
        case FaultKind.NODE_STOP | FaultKind.NODE_KILL:
            return "leader node"  # which one, is found at fault time
        case FaultKind.PRIMARY_KILL:
            return "primary"
