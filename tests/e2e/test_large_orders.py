"""Orders as large as the service accepts (~240 KB: metadata with 14,000 keys) flow through
the worker's byte budget (service/budget.py) with everything else: each gets its reply, and
a chain of large and small actions on one order, published at once, is applied in order
(the budget is asked for in delivery order, so it neither reorders nor deadlocks them). The
memory bound itself is measured by `make bench-memory`; the cache's bound by
tests/unit/test_memory_bounds.py."""

from __future__ import annotations

import asyncio
from typing import Any

from .amqp_client import AmqpClient
from .contract import assert_success, get_order, new_customer_id, place, simple_order
from .waiting import eventually

REPLY_TIMEOUT = 120.0


def _large_metadata(n: int) -> dict[str, Any]:
    """About 240 KB of JSON, different for each `n`."""
    return {f"m{k:05d}": [10_000 + (n * 7919 + k) % 90_000] for k in range(14_000)}


async def test_large_and_small_places_all_answered(client: AmqpClient) -> None:
    customer = new_customer_id()
    bodies = []
    for n in range(24):
        bodies.append(simple_order(customer, metadata=_large_metadata(n)))
        bodies.append(simple_order(customer, notes=f"small {n}"))
    replies = await asyncio.gather(
        *(client.request("orders.place", body, timeout=REPLY_TIMEOUT) for body in bodies)
    )
    orders = [assert_success(reply) for reply in replies]
    assert len({order["id"] for order in orders}) == len(bodies)
    large = [order for order in orders if len(order["metadata"]) == 14_000]
    assert len(large) == 24


async def test_large_and_small_actions_on_one_order_apply_in_published_order(
    client: AmqpClient,
) -> None:
    order = await place(client, simple_order(new_customer_id()))
    chain: list[dict[str, Any]] = []
    for status, tag in (("processing", "a"), ("confirmed", "b"), ("in_progress", "c")):
        metadata = {f"k{k:05d}": [tag] for k in range(5_000)}  # the last one applied wins
        chain.append({"action": "update_metadata", "metadata": metadata})
        chain.append({"action": "update_status", "status": status})
    for n, action in enumerate(chain):  # published one after the other, replies not awaited
        await client.publish("orders.action", {"id": order["id"], "request_id": f"s{n}", **action})

    async def all_applied() -> bool:
        return bool((await get_order(client, order["id"]))["version"] == 1 + len(chain))

    await eventually(all_applied, timeout=REPLY_TIMEOUT, what="every action applied")
    stored = await get_order(client, order["id"])
    assert stored["status"] == "in_progress"
    assert [h["to"] for h in stored["status_history"]] == [
        "pending",
        "processing",
        "confirmed",
        "in_progress",
    ]
    assert len(stored["metadata"]) == 5_000
    assert {tuple(value) for value in stored["metadata"].values()} == {("c",)}
