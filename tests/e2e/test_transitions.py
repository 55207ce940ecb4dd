"""The transition table, walked over the wire, and its atomicity under concurrency."""

from __future__ import annotations

import asyncio
from itertools import cycle, islice, pairwise

import pytest

from .amqp_client import AmqpClient, EventCollector, JSONObject
from .contract import (
    STATUSES,
    TRANSITIONS,
    act,
    assert_error,
    assert_success,
    get_order,
    new_customer_id,
    place,
    simple_order,
)

# How to reach each status from pending.
PATHS: dict[str, list[str]] = {
    "pending": [],
    "processing": ["processing"],
    "confirmed": ["confirmed"],
    "in_progress": ["in_progress"],
    "on_hold": ["on_hold"],
    "completed": ["in_progress", "completed"],
    "cancelled": ["cancelled"],
    "refunded": ["in_progress", "completed", "refunded"],
}

CASES = [
    (source, target, action)
    for source in STATUSES
    for target in STATUSES
    for action in ["update_status"]
    + (["cancel"] if target == "cancelled" else [])
    + (["complete"] if target == "completed" else [])
]


async def _order_in(client: AmqpClient, status: str) -> JSONObject:
    order = await place(client, simple_order(new_customer_id()))
    for step in PATHS[status]:
        order = assert_success(await act(client, order["id"], "update_status", status=step))
    assert order["status"] == status
    return order


@pytest.mark.parametrize(("source", "target", "action"), CASES)
async def test_transition_table(client: AmqpClient, source: str, target: str, action: str) -> None:
    order = await _order_in(client, source)
    fields = {"status": target} if action == "update_status" else {}
    reply = await act(client, order["id"], action, **fields)
    stored = await get_order(client, order["id"])
    if target == source:
        assert assert_success(reply)["version"] == order["version"]
        assert stored == order
    elif target in TRANSITIONS[source]:
        data = assert_success(reply)
        assert data["status"] == target
        assert data["version"] == order["version"] + 1
        assert data["status_history"][-1]["from"] == source
        assert data["status_history"][-1]["to"] == target
        assert data["status_history"][-1]["action"] == action
        assert stored == data
    else:
        error = assert_error(reply, "invalid_transition")
        assert error["details"]["from"] == source
        assert error["details"]["to"] == target
        assert sorted(error["details"]["allowed"]) == sorted(TRANSITIONS[source])
        assert stored == order


async def test_concurrent_updates_form_a_valid_chain(
    client: AmqpClient, events: EventCollector
) -> None:
    """Without expected_version, every applied change starts from the status it saw."""
    order = await place(client, simple_order(new_customer_id()))
    order_db_id = order["id"]
    targets = list(islice(cycle(["processing", "confirmed", "on_hold", "in_progress"]), 40))
    replies = await asyncio.gather(
        *(act(client, order_db_id, "update_status", status=target) for target in targets)
    )
    for reply in replies:
        if not reply["success"]:
            assert reply["error"]["code"] in {"version_conflict", "invalid_transition"}, reply

    stored = await get_order(client, order_db_id)
    history = stored["status_history"]
    assert history[0]["from"] is None
    for previous, entry in pairwise(history):
        assert entry["from"] == previous["to"], history
        assert entry["to"] in TRANSITIONS[entry["from"]], history
    assert stored["version"] == len(history)
    assert stored["status"] == history[-1]["to"]

    # The events tell the same story, once each, in version order.
    final_version = stored["version"]
    changes = await events.wait_for_all(
        lambda e: e.routing_key == "order.status_changed" and e.order_db_id == order_db_id,
        final_version - 1,
    )
    assert [e.body["version"] for e in changes] == list(range(2, final_version + 1))
    assert [(e.body["from_status"], e.body["to_status"]) for e in changes] == [
        (entry["from"], entry["to"]) for entry in history[1:]
    ]
