"""The targets from the performance issue, the printed table and `.bench/latest.json`."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RSS_GROWTH_TOLERANCE_MB = 10.0
"""`no growth`: after the last of the identical soak rounds the worker's RSS is at most this
much above its RSS after the second (the first half is warm-up)."""


@dataclass(frozen=True)
class Target:
    key: str
    text: str
    check: Callable[[dict[str, Any]], bool | None]
    scale: str | None = None
    """The only scale the target is asked at (None: every scale)."""


def _at_least(key: str, bound: float) -> Target:
    return Target(key, f">= {bound:g}", lambda r: _cmp(r.get(key), lambda v: v >= bound))


def _at_most(key: str, bound: float) -> Target:
    return Target(key, f"<= {bound:g}", lambda r: _cmp(r.get(key), lambda v: v <= bound))


def _at_most_at_small_scale(key: str, bound: float) -> Target:
    return Target(
        key,
        f"<= {bound:g} at small scale",
        lambda r: _cmp(r.get(key), lambda v: v <= bound),
        scale="small",
    )


def _cmp(value: Any, test: Callable[[float], bool]) -> bool | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return test(float(value))


def _cursor(result: dict[str, Any]) -> bool | None:
    deep, first = result.get("list_cursor_deep_page_ms"), result.get("list_cursor_first_page_ms")
    if deep is None or first is None:
        return None
    return bool(deep <= 2 * first)


def _rss(result: dict[str, Any]) -> bool | None:
    rss, growth = result.get("worker_rss_mb"), result.get("rss_growth_mb")
    if rss is None:
        return None
    return bool(rss <= 200 and (growth is None or growth <= RSS_GROWTH_TOLERANCE_MB))


TARGETS = (
    _at_least("ratio_place_vs_naive", 1.5),
    _at_least("ratio_action_vs_naive", 1.3),
    _at_most("worker_cpu_ms_per_place", 1.2),
    _at_most("worker_cpu_ms_per_action", 1.5),
    _at_most("mongod_cpu_ms_per_place", 0.7),
    _at_most("mongod_docs_written_per_place", 2),
    _at_most("mongod_docs_written_per_action", 2),
    _at_most("rpc_get_p99_ms", 5),
    _at_most_at_small_scale("rpc_list_p99_ms", 25),
    _at_most_at_small_scale("rpc_stats_p99_ms", 25),
    _at_most("list_first_page_p99_ms", 25),
    _at_most("list_search_p50_ms", 250),
    Target("list_cursor_deep_page_ms", "<= 2x cursor first page", _cursor),
    _at_most("stats_customer_ms", 20),
    _at_most("stats_global_ms", 300),
    Target("worker_rss_mb", "<= 200, no growth", _rss),
)

TABLE_KEYS = (
    "naive_orders_per_s",
    "place_orders_per_s",
    "ratio_place_vs_naive",
    "naive_action_per_s",
    "action_per_s",
    "ratio_action_vs_naive",
    "worker_cpu_ms_per_place",
    "worker_cpu_ms_per_action",
    "mongod_cpu_ms_per_place",
    "mongod_docs_written_per_place",
    "mongod_docs_written_per_action",
    "rpc_get_p50_ms",
    "rpc_get_p99_ms",
    "rpc_list_p50_ms",
    "rpc_list_p99_ms",
    "rpc_stats_p50_ms",
    "rpc_stats_p99_ms",
    "index_build_s",
    "list_first_page_customer_p99_ms",
    "list_first_page_status_p99_ms",
    "list_first_page_date_p99_ms",
    "list_first_page_p99_ms",
    "list_search_p50_ms",
    "list_deep_page_ms",
    "list_cursor_first_page_ms",
    "list_cursor_deep_page_ms",
    "stats_customer_ms",
    "stats_global_ms",
    "worker_rss_mb",
    "rss_growth_mb",
    "http_place_per_s",
    "ratio_http_place_vs_worker",
    "http_action_per_s",
    "ratio_http_action_vs_worker",
    "http_get_p50_ms",
    "http_get_p99_ms",
    "http_get_per_s",
    "http_list_p50_ms",
    "http_list_p99_ms",
    "http_list_per_s",
    "gateway_cpu_ms_per_place",
    "gateway_cpu_ms_per_action",
    "gateway_cpu_ms_per_get",
    "gateway_rss_mb",
    "http_unexpected_replies",
    "http_slow_requests",
    "history_publish_one_us_without",
    "history_publish_one_us_with",
    "history_publish_one_us_added",
    "history_publish_burst_us_without",
    "history_publish_burst_us_with",
    "history_publish_burst_us_added",
)


def verdicts(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for target in TARGETS:
        if target.scale is not None and result.get("scale") != target.scale:
            continue  # not asked at this scale: no verdict
        met = target.check(result)
        out[target.key] = {
            "target": target.text,
            "value": result.get(target.key),
            "met": met,
        }
    return out


def _fmt(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(result: dict[str, Any]) -> str:
    """A Markdown table: figure, value, target, met/missed."""
    checks = verdicts(result)
    rows = ["| figure | value | target | verdict |", "|---|---:|---|---|"]
    for key in TABLE_KEYS:
        check = checks.get(key)
        target = check["target"] if check else ""
        if check is None:
            verdict = ""
        elif check["met"] is None:
            verdict = "not measured"
        else:
            verdict = "met" if check["met"] else "missed"
        rows.append(f"| `{key}` | {_fmt(result.get(key))} | {target} | {verdict} |")
    return "\n".join(rows)


def write(result: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2, default=str, allow_nan=False)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text + "\n")
    tmp.replace(path)


def jsonable(value: Any) -> Any:
    """NaN (nothing measured) as null, so the file is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value
