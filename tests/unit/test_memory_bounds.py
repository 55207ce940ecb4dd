"""What a worker keeps in memory stays within its bounds whatever producers send: the
recent-orders cache by an estimate of its bytes, the bodies worked on at once by a byte
budget, metric labels by the service's own routing keys."""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import sys
from typing import Any

from service.application.usecases import RecentOrders, footprint
from service.budget import ByteBudget
from service.domain.order import Order
from service.metrics import OTHER, routing_key_label
from tests.unit.builders import placed_order

LARGE_METADATA = {f"m{k:05d}": [k] for k in range(14_000)}
"""About 240 KB of JSON: the metadata of the issue's hostile orders."""


def _order(id: int, metadata: dict[str, Any] | None = None) -> Order:
    order = placed_order() if metadata is None else placed_order(metadata=metadata)
    return dataclasses.replace(order, id=id, order_id=100_000_000 + id)


def _true_size(value: Any) -> int:
    """Every object reached from `value`, once (what the cache holds on to), but not what
    every order shares: attribute names and enum members."""
    seen: set[int] = set()
    stack = [value]
    total = 0
    while stack:
        item = stack.pop()
        if id(item) in seen or isinstance(item, enum.Enum):
            continue
        seen.add(id(item))
        total += sys.getsizeof(item)
        if isinstance(item, dict):
            stack += [*item.keys(), *item.values()]
        elif isinstance(item, list | tuple):
            stack += list(item)
        elif dataclasses.is_dataclass(item):
            total += sys.getsizeof(vars(item))
            stack += list(vars(item).values())
    return total


def test_the_estimate_covers_what_an_order_holds() -> None:
    for order in (_order(1), _order(2, {"tags": [f"t{n}" for n in range(500)]})):
        assert footprint(order, 10**9) >= _true_size(order)


def test_large_orders_are_not_kept_and_the_cache_stays_under_its_byte_budget() -> None:
    recent = RecentOrders(size=10_000, max_bytes=1024 * 1024, max_order_bytes=64 * 1024)
    large = _order(1, LARGE_METADATA)
    assert _true_size(large) > 2_000_000
    for id in range(1, 3001):  # the 3,000 hostile orders
        recent.remember(dataclasses.replace(large, id=id, order_id=100_000_000 + id))
        assert recent.bytes <= 1024 * 1024
    assert len(recent) == 0
    assert recent.get(3000, None) is None


def test_many_small_orders_fill_the_byte_budget_and_the_oldest_go_first() -> None:
    budget = 256 * 1024
    recent = RecentOrders(size=10_000, max_bytes=budget)
    for id in range(1, 2001):
        recent.remember(_order(id))
        assert recent.bytes <= budget
    kept = len(recent)
    assert 0 < kept < 2000
    assert recent.get(2000, None) is not None
    assert recent.get(None, 100_002_000) is not None
    assert recent.get(1, None) is None  # the least recently written went first
    assert recent.get(None, 100_000_001) is None
    kept_orders = [recent.get(id, None) for id in range(2001 - kept, 2001)]
    accounted = sum(footprint(order, 10**9) for order in kept_orders if order is not None)
    assert None not in kept_orders
    assert accounted == recent.bytes


def test_an_order_that_grows_too_large_is_forgotten_not_left_stale() -> None:
    recent = RecentOrders(max_order_bytes=64 * 1024)
    recent.remember(_order(7))
    assert recent.get(7, None) is not None
    recent.remember(_order(7, LARGE_METADATA))
    assert recent.get(7, None) is None
    assert recent.bytes == 0


async def test_the_byte_budget_bounds_bodies_in_flight_first_come_first_served() -> None:
    budget = ByteBudget(1000)
    running: set[str] = set()
    most = 0
    order: list[str] = []
    release = asyncio.Event()

    async def work(name: str, size: int) -> None:
        nonlocal most
        async with budget.hold(size):
            order.append(name)
            running.add(name)
            most = max(most, sum({"a": 600, "b": 600, "c": 100, "d": 5000}[n] for n in running))
            await release.wait()
            running.discard(name)

    tasks = [asyncio.create_task(work(name, size)) for name, size in
             (("a", 600), ("b", 600), ("c", 100), ("d", 5000))]  # fmt: skip
    await asyncio.sleep(0.05)
    assert order == ["a"]  # b waits for room, and c, small, does not overtake it
    release.set()
    await asyncio.gather(*tasks)
    assert order == ["a", "b", "c", "d"]
    assert most <= 5000  # d, larger than the whole budget, ran alone
    assert budget.free == 1000


async def test_a_cancelled_wait_gives_its_place_back() -> None:
    budget = ByteBudget(100)
    entered: list[int] = []

    async def hold(size: int) -> None:
        async with budget.hold(size):
            entered.append(size)

    async with budget.hold(100):
        waiting = asyncio.create_task(hold(50))
        await asyncio.sleep(0.01)
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        later = asyncio.create_task(hold(30))
    await later
    assert entered == [30]
    assert budget.free == 100


def test_metric_labels_are_the_service_routing_keys_only() -> None:
    assert routing_key_label("orders.place") == "orders.place"
    assert routing_key_label("r2_5000ms.orders.action") == "orders.action"
    assert routing_key_label("order.placed") == "order.placed"
    for hostile in ("x1.orders.place", "orders.place.extra", "amq.gen-abc", "", "\u00e9" * 200):
        assert routing_key_label(hostile) == OTHER
