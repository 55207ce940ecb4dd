"""The chaos report: which code ran, what the logs say, and the report on disk and screen."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from devtools.chaos_infra import REPO_ROOT, WORKER_PACKAGES, source_digest
from devtools.chaos_ledger import Ledger, render_table

CHAOS_DIR = REPO_ROOT / ".chaos"


def source_state(snapshot: Path) -> dict[str, Any]:
    """Which code the workers ran: the commit, files changed on top of it, the digest."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False
        )
        return done.stdout.strip()

    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "uncommitted": git("status", "--porcelain", "--", *WORKER_PACKAGES).splitlines(),
        "sha256": source_digest(snapshot),
        "snapshot": str(snapshot),
    }


def log_summary(run_dir: Path) -> dict[str, dict[str, int]]:
    """ERROR / WARNING / Traceback lines per worker log."""
    summary: dict[str, dict[str, int]] = {}
    for path in sorted(run_dir.glob("worker-*.log")):
        text = path.read_text(errors="replace")
        summary[path.name] = {
            word: sum(word in line for line in text.splitlines())
            for word in (" ERROR ", " WARNING ", "Traceback")
        }
    return summary


def write_report(run_dir: Path, report: dict[str, Any]) -> None:
    text = json.dumps(report, indent=2, default=str)
    (run_dir / "ledger.json").write_text(text)
    (CHAOS_DIR / "latest.json").write_text(text)


def print_report(report: dict[str, Any], ledger: Ledger) -> None:
    print("\nfaults:")
    for fault in report["faults"]:
        print(
            f"  +{fault['offset_s']:>6.1f}s  {fault['started_at']}  {fault['kind']:<17} "
            f"{fault['target']:<9} down {fault['down_s']:.1f}s, repaired after "
            f"{fault['recovered_s']:.1f}s ({fault['detail']})"
        )
    for exit_ in report["unexpected_worker_exits"]:
        print(f"  UNEXPECTED EXIT {exit_['worker']} code {exit_['code']} at +{exit_['at']}s")
    for offset in report["broker_connection_lost_outside_faults_at_s"]:
        print(f"  +{offset:>6.1f}s  broker connection lost, NOT injected by this run")
    if shares := report.get("actions_by_worker"):
        total = sum(shares.values()) or 1
        each = (f"{name} {n:.0f} ({n / total:.0%})" for name, n in sorted(shares.items()))
        print("  actions applied per worker (orders_partition_actions_total): " + ", ".join(each))
    print()
    print(render_table(ledger.rows()))
    source = report["source"]
    print(
        f"\nworkers ran a copy of service/ and schemas/ taken at the start: commit "
        f"{source['commit']} with {len(source['uncommitted'])} uncommitted change(s), "
        f"sha256 {source['sha256']}"
    )
    print(f"wall time {report['wall_seconds']:.0f}s; report in {report['run_dir']}/ledger.json")
    if failures := report["failures"]:
        print("FAILED: " + "; ".join(failures))
    else:
        print("OK: nothing lost, nothing doubled, every change has exactly one event")
