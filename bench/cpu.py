"""CPU time per message, by process: where a throughput run spends the machine's cores.

On two cores shared by RabbitMQ, mongod, the worker and the load generator, throughput is
bounded by the CPU every message costs all of them together; this says who pays it.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of `pid` so far; None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the command name may hold spaces
    return (int(fields[11]) + int(fields[12])) / TICKS


def rabbitmq_pids() -> list[int]:
    found = subprocess.run(
        ["pgrep", "-u", "rabbitmq", "beam.smp"],  # noqa: S607 - procps, fixed arguments
        capture_output=True,
        text=True,
        check=False,
    )
    return [int(pid) for pid in found.stdout.split()]


@dataclass
class CpuMeter:
    """CPU seconds of RabbitMQ, mongod and the bench process across one phase."""

    processes: dict[str, list[int]]
    start: dict[str, float]

    @classmethod
    def begin(cls, mongod_pid: int | None, others: Mapping[str, int] | None = None) -> CpuMeter:
        """`others`: more processes measured across the phase by name (the HTTP gateway)."""
        processes = {
            "rabbitmq": rabbitmq_pids(),
            "mongod": [] if mongod_pid is None else [mongod_pid],
            "bench": [os.getpid()],
        }
        processes |= {name: [pid] for name, pid in (others or {}).items()}
        return cls(processes, _totals(processes))

    def per_message(self, messages: int, worker_cpu_s: float | None = None) -> dict[str, float]:
        """Milliseconds of CPU per message for each process since `begin`; the worker's
        (its whole life: start-up, the run, the drain) when given."""
        spent = {name: total - self.start[name] for name, total in _totals(self.processes).items()}
        if worker_cpu_s is not None:
            spent["worker"] = worker_cpu_s
        spent["all"] = sum(spent.values())
        return {name: round(1000 * seconds / messages, 2) for name, seconds in spent.items()}


def _totals(processes: dict[str, list[int]]) -> dict[str, float]:
    return {name: sum(cpu_seconds(pid) or 0.0 for pid in pids) for name, pids in processes.items()}
