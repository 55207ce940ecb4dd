"""The worker stopped mid-stream (SIGKILL or SIGTERM) and restarted on the same database.

No message is lost, none is applied twice (redeliveries are de-duplicated on message_id),
and every committed change gets its event, in version order per order. These tests start
their own workers; no module worker runs alongside them.
"""

from __future__ import annotations

import signal
import uuid
from collections import defaultdict

import pytest

from .amqp_client import AmqpClient, Event, EventCollector
from .contract import assert_success, list_orders, new_customer_id, place, simple_order
from .worker import STOP_TIMEOUT, WorkerLauncher, new_database, wait_for_exit, wait_until_ready

ORDERS = 10
ACTIONS_PER_ORDER = 15
NEW_ORDERS = 40
SETTLE_TIMEOUT = 60.0


@pytest.mark.parametrize("stop_signal", [signal.SIGKILL, signal.SIGTERM], ids=["kill", "term"])
async def test_stop_mid_stream_loses_nothing_and_applies_once(
    amqp_client: AmqpClient, launcher: WorkerLauncher, stop_signal: signal.Signals
) -> None:
    client = amqp_client
    database = new_database()
    first = launcher.start(database)
    await wait_until_ready(client, first)
    events = await EventCollector.start(client.connection)
    try:
        customer_id = new_customer_id()
        orders = [await place(client, simple_order(customer_id)) for _ in range(ORDERS)]
        order_ids = {order["id"] for order in orders}
        new_customer = new_customer_id()

        # A stream of fire-and-forget commands, each with its own message_id.
        for round_ in range(ACTIONS_PER_ORDER):
            for order in orders:
                await client.publish(
                    "orders.action",
                    {
                        "id": order["id"],
                        "action": "update_metadata",
                        "metadata": {f"k{round_}": round_},
                    },
                )
            for _ in range(NEW_ORDERS // ACTIONS_PER_ORDER + 1):
                await client.publish("orders.place", simple_order(new_customer))
        placed_count = (NEW_ORDERS // ACTIONS_PER_ORDER + 1) * ACTIONS_PER_ORDER

        def ours(event: Event) -> bool:
            return event.routing_key == "order.metadata_updated" and event.order_db_id in order_ids

        def new_placed(event: Event) -> bool:
            return (
                event.routing_key == "order.placed"
                and event.body.get("order", {}).get("customer_id") == new_customer
            )

        # Stop the worker while it is busy with the stream.
        await events.wait_for_all(ours, 10, timeout=SETTLE_TIMEOUT)
        first.process.send_signal(stop_signal)
        exit_code = await wait_for_exit(first, STOP_TIMEOUT)
        if stop_signal == signal.SIGTERM:
            assert exit_code == 0, f"SIGTERM did not stop the worker cleanly:\n{first.log_tail()}"

        second = launcher.start(database)
        await wait_until_ready(client, second)

        # Every command is eventually applied, and announced.
        total = ORDERS * ACTIONS_PER_ORDER
        await events.wait_for_all(ours, total, timeout=SETTLE_TIMEOUT)
        await events.wait_for_all(new_placed, placed_count, timeout=SETTLE_TIMEOUT)

        # ...exactly once.
        for order in orders:
            stored = assert_success(await client.request("orders.get", {"id": order["id"]}))
            assert stored["version"] == 1 + ACTIONS_PER_ORDER, stored
            assert stored["metadata"] == {f"k{i}": i for i in range(ACTIONS_PER_ORDER)}
        listed = await list_orders(client, customer_id=new_customer, per_page=100)
        assert listed["pagination"]["total"] == placed_count
        assert len(events.matching(new_placed)) == placed_count

        # One event per version, in version order for each order.
        versions: dict[int, list[int]] = defaultdict(list)
        for event in events.matching(ours):
            versions[event.order_db_id].append(event.body["version"])
        for order_db_id, seen in versions.items():
            assert seen == list(range(2, 2 + ACTIONS_PER_ORDER)), (order_db_id, seen)
        assert second.process.poll() is None, second.log_tail()
    finally:
        await events.stop()


async def test_restart_keeps_ids_sequential_and_unique(
    amqp_client: AmqpClient, launcher: WorkerLauncher
) -> None:
    database = new_database()
    first = launcher.start(database)
    await wait_until_ready(amqp_client, first)
    customer_id = new_customer_id()
    key = f"idem-{uuid.uuid4().hex}"
    before = [await place(amqp_client, simple_order(customer_id)) for _ in range(3)]
    keyed = await place(amqp_client, simple_order(customer_id, idempotency_key=key))
    first.process.send_signal(signal.SIGTERM)
    assert await wait_for_exit(first, STOP_TIMEOUT) == 0, first.log_tail()

    second = launcher.start(database)
    await wait_until_ready(amqp_client, second)
    after = [await place(amqp_client, simple_order(customer_id)) for _ in range(3)]
    ids = [order["id"] for order in [*before, keyed, *after]]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert ids[0] == 1  # a fresh database starts at 1
    assert len({order["order_id"] for order in [*before, keyed, *after]}) == len(ids)
    # The idempotency key survives the restart.
    again = await place(amqp_client, simple_order(customer_id, idempotency_key=key))
    assert again["id"] == keyed["id"]
