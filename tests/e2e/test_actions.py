"""Cancel, metadata updates and no-op status changes, each with the right events."""

from __future__ import annotations

from .amqp_client import AmqpClient, Event, EventCollector, EventPredicate, decode_object
from .contract import (
    STATUS_CHANGED_FIELDS,
    TIMESTAMP_RE,
    act,
    assert_error,
    assert_success,
    assert_validation_error,
    get_order,
    new_customer_id,
    place,
    simple_order,
)


def _event(routing_key: str, order_db_id: int, version: int) -> EventPredicate:
    def predicate(event: Event) -> bool:
        return (
            event.routing_key == routing_key
            and event.order_db_id == order_db_id
            and event.body.get("version") == version
        )

    return predicate


async def test_cancel_with_reason(client: AmqpClient, events: EventCollector) -> None:
    customer_id = new_customer_id()
    order = await place(client, simple_order(customer_id, user_id="user-7"))
    order_db_id = order["id"]

    cancelled = assert_success(
        await act(client, order_db_id, "cancel", reason="Customer request", notes="by phone")
    )
    assert cancelled["status"] == "cancelled"
    assert cancelled["version"] == 2
    last = cancelled["status_history"][-1]
    assert last["from"] == "pending"
    assert last["to"] == "cancelled"
    assert last["action"] == "cancel"
    assert last["reason"] == "Customer request"
    assert last["notes"] == "by phone"
    assert TIMESTAMP_RE.match(last["at"]), last

    event = await events.wait_for(_event("order.status_changed", order_db_id, 2))
    assert event.body.keys() >= STATUS_CHANGED_FIELDS, event.body
    assert event.body["from_status"] == "pending"
    assert event.body["to_status"] == "cancelled"
    assert event.body["action"] == "cancel"
    assert event.body["reason"] == "Customer request"
    assert event.body["notes"] == "by phone"
    assert event.body["customer_id"] == customer_id
    assert event.body["user_id"] == "user-7"
    assert event.body["order_id"] == order["order_id"]

    # Cancelling again asks for the status it already has: success, nothing changes.
    again = assert_success(await act(client, order_db_id, "cancel", reason="twice"))
    assert again["status"] == "cancelled"
    assert again["version"] == 2
    assert again["status_history"] == cancelled["status_history"]

    # cancelled is final.
    error = assert_error(
        await act(client, order_db_id, "update_status", status="pending"), "invalid_transition"
    )
    assert error["details"]["from"] == "cancelled"
    assert error["details"]["to"] == "pending"
    assert error["details"]["allowed"] == []

    stored = await get_order(client, order_db_id)
    assert stored["version"] == 2
    assert stored["status"] == "cancelled"


async def test_update_metadata_merge_and_replace(
    client: AmqpClient, events: EventCollector
) -> None:
    body = simple_order(
        new_customer_id(), metadata={"source": "webform", "campaign_id": "SUMMER2025"}
    )
    order = await place(client, body)
    order_db_id = order["id"]

    merged = assert_success(
        await act(
            client,
            order_db_id,
            "update_metadata",
            metadata={"campaign_id": None, "channel": "email", "tags": ["a", "b"]},
        )
    )
    expected: dict[str, object] = {"source": "webform", "channel": "email", "tags": ["a", "b"]}
    assert merged["metadata"] == expected
    assert merged["version"] == 2
    assert merged["status"] == "pending"
    assert merged["status_history"] == order["status_history"]
    event = await events.wait_for(_event("order.metadata_updated", order_db_id, 2))
    assert event.body["event_type"] == "order.metadata_updated"
    assert event.body["metadata"] == expected
    assert event.body["order_id"] == order["order_id"]
    assert event.message_id == event.body["event_id"]

    explicit_merge = assert_success(
        await act(client, order_db_id, "update_metadata", metadata={"n": 1}, mode="merge")
    )
    expected = {**expected, "n": 1}
    assert explicit_merge["metadata"] == expected
    assert explicit_merge["version"] == 3
    await events.wait_for(_event("order.metadata_updated", order_db_id, 3))

    replaced = assert_success(
        await act(client, order_db_id, "update_metadata", metadata={"only": 1}, mode="replace")
    )
    assert replaced["metadata"] == {"only": 1}
    assert replaced["version"] == 4
    event = await events.wait_for(_event("order.metadata_updated", order_db_id, 4))
    assert event.body["metadata"] == {"only": 1}

    stored = await get_order(client, order_db_id)
    assert stored["metadata"] == {"only": 1}
    assert stored["version"] == 4
    assert events.for_order(order_db_id, "order.status_changed") == []


async def test_update_metadata_rejects_bad_input(client: AmqpClient) -> None:
    order = await place(client, simple_order(new_customer_id(), metadata={"k": "v"}))
    for metadata in ({"$set": 1}, {"a.b": 1}):
        assert_validation_error(
            await act(client, order["id"], "update_metadata", metadata=metadata)
        )
    assert_validation_error(
        await act(client, order["id"], "update_metadata", metadata={"x": 1}, mode="upsert")
    )
    stored = await get_order(client, order["id"])
    assert stored["metadata"] == {"k": "v"}
    assert stored["version"] == 1


async def test_asking_for_the_current_status_changes_nothing(
    client: AmqpClient, events: EventCollector
) -> None:
    order = await place(client, simple_order(new_customer_id()))
    order_db_id = order["id"]
    started = assert_success(await act(client, order_db_id, "update_status", status="in_progress"))
    assert started["version"] == 2
    await events.wait_for(_event("order.status_changed", order_db_id, 2))

    same = assert_success(
        await act(client, order_db_id, "update_status", status="in_progress", notes="again")
    )
    assert same["status"] == "in_progress"
    assert same["version"] == 2
    assert same["updated_at"] == started["updated_at"]
    assert same["status_history"] == started["status_history"]

    # The barrier: a later change of the same order; its event comes after any earlier one.
    barrier = assert_success(await act(client, order_db_id, "update_metadata", metadata={"b": 1}))
    assert barrier["version"] == 3
    await events.wait_for(_event("order.metadata_updated", order_db_id, 3))
    changes = events.for_order(order_db_id, "order.status_changed")
    assert [(e.body["to_status"], e.body["version"]) for e in changes] == [("in_progress", 2)]


async def test_full_lifecycle_through_hold_to_refund(client: AmqpClient) -> None:
    order = await place(client, simple_order(new_customer_id()))
    path = ["on_hold", "pending", "processing", "confirmed", "completed", "refunded"]
    current = order
    for version, status in enumerate(path, start=2):
        current = assert_success(
            await act(
                client, order["id"], "update_status", status=status, expected_version=version - 1
            )
        )
        assert current["status"] == status
        assert current["version"] == version
    assert [h["to"] for h in current["status_history"]] == ["pending", *path]
    error = assert_error(
        await act(client, order["id"], "update_status", status="pending"), "invalid_transition"
    )
    assert error["details"]["allowed"] == []


async def test_action_by_order_id(client: AmqpClient, events: EventCollector) -> None:
    order = await place(client, simple_order(new_customer_id()))
    reply = await client.request_message(
        "orders.action",
        {"order_id": order["order_id"], "action": "update_status", "status": "confirmed"},
    )
    data = assert_success(decode_object(reply.body))
    assert data["id"] == order["id"]
    assert data["status"] == "confirmed"
    event = await events.wait_for(_event("order.status_changed", order["id"], 2))
    # Events carry the triggering command's correlation_id.
    assert event.correlation_id == reply.correlation_id
    assert_error(
        await client.request("orders.action", {"order_id": 999_999_999, "action": "complete"}),
        "not_found",
    )


async def test_update_metadata_honours_expected_version_and_request_id(
    client: AmqpClient, events: EventCollector
) -> None:
    order = await place(client, simple_order(new_customer_id(), metadata={"a": 1}))
    order_db_id = order["id"]
    error = assert_error(
        await act(client, order_db_id, "update_metadata", metadata={"b": 2}, expected_version=3),
        "version_conflict",
    )
    assert error["details"]["current_version"] == 1
    assert (await get_order(client, order_db_id))["metadata"] == {"a": 1}

    fields = {"metadata": {"a": None, "n": 1}, "expected_version": 1, "request_id": "rq-1"}
    first = assert_success(await act(client, order_db_id, "update_metadata", **fields))
    assert first["metadata"] == {"n": 1}
    assert first["version"] == 2
    again = assert_success(await act(client, order_db_id, "update_metadata", **fields))
    assert again["version"] == 2
    assert again["metadata"] == {"n": 1}

    barrier = assert_success(
        await act(client, order_db_id, "update_status", status="on_hold", expected_version=2)
    )
    assert barrier["version"] == 3
    await events.wait_for(_event("order.status_changed", order_db_id, 3))
    updates = events.for_order(order_db_id, "order.metadata_updated")
    assert [(e.body["version"], e.body["metadata"]) for e in updates] == [(2, {"n": 1})]


async def test_events_of_one_order_come_in_version_order(
    client: AmqpClient, events: EventCollector
) -> None:
    order = await place(client, simple_order(new_customer_id()))
    order_db_id = order["id"]
    steps: list[tuple[str, dict[str, object]]] = [
        ("update_metadata", {"metadata": {"step": 1}}),
        ("update_status", {"status": "processing"}),
        ("update_metadata", {"metadata": {"step": 2}}),
        ("update_status", {"status": "on_hold"}),
        ("update_status", {"status": "confirmed"}),
        ("complete", {}),
        ("update_metadata", {"metadata": {"step": 3}, "mode": "replace"}),
        ("update_status", {"status": "refunded"}),
    ]
    for action, fields in steps:
        assert_success(await act(client, order_db_id, action, **fields))
    final_version = 1 + len(steps)
    received = await events.wait_for_all(lambda e: e.order_db_id == order_db_id, 1 + len(steps))
    assert [e.routing_key for e in received] == [
        "order.placed",
        "order.metadata_updated",
        "order.status_changed",
        "order.metadata_updated",
        "order.status_changed",
        "order.status_changed",
        "order.status_changed",
        "order.metadata_updated",
        "order.status_changed",
    ]
    assert [e.body.get("version", e.body.get("order", {}).get("version")) for e in received] == (
        list(range(1, final_version + 1))
    )
    assert (await get_order(client, order_db_id))["version"] == final_version
