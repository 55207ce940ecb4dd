"""Concurrent actions on one order: a transition applies atomically, exactly once."""

from __future__ import annotations

import asyncio
from collections import Counter
from itertools import cycle, islice

import pytest

from .amqp_client import AmqpClient, EventCollector, JSONObject
from .contract import (
    TRANSITIONS,
    act,
    assert_error,
    get_order,
    new_customer_id,
    place,
    simple_order,
)

CONCURRENCY = 20


async def _barrier(client: AmqpClient, events: EventCollector, order_db_id: int) -> None:
    """One more change, and its event: every earlier event of the order has arrived by then."""
    reply = await act(client, order_db_id, "update_metadata", metadata={"barrier": True})
    assert reply["success"] is True, reply
    version = reply["data"]["version"]
    await events.wait_for(
        lambda e: (
            e.routing_key == "order.metadata_updated"
            and e.order_db_id == order_db_id
            and e.body.get("version") == version
        )
    )


@pytest.mark.parametrize("targets", ["different", "same"])
async def test_concurrent_updates_with_expected_version(
    client: AmqpClient, events: EventCollector, targets: str
) -> None:
    order = await place(client, simple_order(new_customer_id()))
    order_db_id = order["id"]
    choices = sorted(TRANSITIONS["pending"]) if targets == "different" else ["confirmed"]
    statuses = list(islice(cycle(choices), CONCURRENCY))

    replies: list[JSONObject] = await asyncio.gather(
        *(
            act(client, order_db_id, "update_status", status=status, expected_version=1)
            for status in statuses
        )
    )

    winners = [(status, r) for status, r in zip(statuses, replies, strict=True) if r["success"]]
    assert len(winners) == 1, replies
    winning_status, winner = winners[0]
    assert winner["data"]["status"] == winning_status
    assert winner["data"]["version"] == 2
    losers = [r for r in replies if not r["success"]]
    assert len(losers) == CONCURRENCY - 1
    for loser in losers:
        error = assert_error(loser, "version_conflict")
        assert error["details"]["current_version"] == 2

    stored = await get_order(client, order_db_id)
    assert stored["status"] == winning_status
    assert stored["version"] == 2
    assert [(h["from"], h["to"]) for h in stored["status_history"]] == [
        (None, "pending"),
        ("pending", winning_status),
    ]

    await _barrier(client, events, order_db_id)
    changes = events.for_order(order_db_id, "order.status_changed")
    assert [(e.body["from_status"], e.body["to_status"], e.body["version"]) for e in changes] == [
        ("pending", winning_status, 2)
    ]


async def test_concurrent_cancels_without_expected_version(
    client: AmqpClient, events: EventCollector
) -> None:
    """Without expected_version, losers may succeed as a no-op or report a conflict."""
    order = await place(client, simple_order(new_customer_id()))
    order_db_id = order["id"]

    replies = await asyncio.gather(
        *(act(client, order_db_id, "cancel", reason=f"r{i}") for i in range(CONCURRENCY))
    )

    outcomes = Counter(
        "success" if r["success"] else r.get("error", {}).get("code") for r in replies
    )
    assert set(outcomes) <= {"success", "version_conflict"}, replies
    assert outcomes["success"] >= 1
    stored = await get_order(client, order_db_id)
    assert stored["status"] == "cancelled"
    assert stored["version"] == 2
    assert len(stored["status_history"]) == 2

    await _barrier(client, events, order_db_id)
    changes = events.for_order(order_db_id, "order.status_changed")
    assert len(changes) == 1, [e.body for e in changes]
    assert changes[0].body["to_status"] == "cancelled"


async def test_concurrent_orders_get_distinct_ids(client: AmqpClient) -> None:
    customer_id = new_customer_id()
    orders = await asyncio.gather(
        *(place(client, simple_order(customer_id)) for _ in range(CONCURRENCY))
    )
    assert len({o["id"] for o in orders}) == CONCURRENCY
    assert len({o["order_id"] for o in orders}) == CONCURRENCY
    assert all(o["order_id"] >= 100_000 for o in orders)
    # Not derivable from id: neither an offset of it nor in step with it.
    by_id = sorted(orders, key=lambda o: int(o["id"]))
    assert len({o["order_id"] - o["id"] for o in by_id}) > 1
    assert [o["order_id"] for o in by_id] != sorted(o["order_id"] for o in by_id)
