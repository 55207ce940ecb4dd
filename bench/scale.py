"""How big a run is: `BENCH_SCALE=full` (default, ~20 minutes) or `small` (under 2 minutes)."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Scale:
    name: str
    orders: int
    """N: places (and as many actions) per throughput run."""
    repeats: int
    """Throughput runs; each figure is their median."""
    dataset: int
    """Orders bulk-loaded for the query measurements."""
    customers: int
    query_repeats: int
    """Requests per query measurement (fewer when `query_budget_s` runs out)."""
    query_min_repeats: int
    query_budget_s: float
    """Time one query measurement may take before it stops repeating."""
    rpc_rate: float
    """Offered requests per second of the open-loop latency runs."""
    rpc_seconds: float
    rpc_warmup_s: float
    """Requests at the same rate before each latency run, not counted."""
    soak_orders: int
    """Places (and as many actions) the long-running worker takes live, to watch its RSS."""
    cursor_walk_budget_s: float
    """How long the keyset walk to the deep page may take; it stops shallower after that."""
    http_orders: int
    """Orders placed through the HTTP gateway (then two status changes each)."""
    http_clients: int
    """Concurrent HTTP clients of the closed-loop runs."""
    http_gets: int
    """GET /api/orders/{id} requests per latency run (one client, then `http_clients`)."""
    http_lists: int
    """GET /api/orders/list requests per latency run."""


FULL = Scale(
    name="full",
    orders=20_000,
    repeats=3,
    dataset=1_000_000,
    customers=50_000,
    query_repeats=50,
    query_min_repeats=5,
    query_budget_s=15.0,
    rpc_rate=200.0,
    rpc_seconds=10.0,
    rpc_warmup_s=2.0,
    soak_orders=1_600,
    cursor_walk_budget_s=90.0,
    http_orders=10_000,
    http_clients=32,
    http_gets=5_000,
    http_lists=2_000,
)
SMALL = Scale(
    name="small",
    orders=2_000,
    repeats=1,
    dataset=100_000,
    customers=5_000,
    query_repeats=20,
    query_min_repeats=3,
    query_budget_s=4.0,
    rpc_rate=200.0,
    rpc_seconds=5.0,
    rpc_warmup_s=1.0,
    soak_orders=800,
    cursor_walk_budget_s=15.0,
    http_orders=2_000,
    http_clients=32,
    http_gets=2_000,
    http_lists=1_000,
)
SCALES = {scale.name: scale for scale in (FULL, SMALL)}


def from_env() -> Scale:
    name = os.environ.get("BENCH_SCALE", "full").strip().lower() or "full"
    try:
        return SCALES[name]
    except KeyError:
        raise SystemExit(f"BENCH_SCALE must be one of {sorted(SCALES)}, not {name!r}") from None
