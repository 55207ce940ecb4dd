"""Actions shared out among workers by order (service/worker/partitions.py): every worker
applies its share, a worker that joins takes its share, a killed worker's share moves to
the others, a worker alone applies actions without the partition hop, and each order's
actions are still applied in the order published, across every change."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from .amqp_client import AmqpClient, EventCollector
from .contract import new_customer_id, place, simple_order
from .waiting import eventually
from .worker import Worker, WorkerLauncher, new_database, wait_until_ready

# Renewed every half second: a killed worker's entry ages out after 1.5 s.
FAST_MEMBERSHIP = {"ORDERS_MEMBERSHIP_SECONDS": "0.5", "ORDERS_PREFETCH": "8"}
CHAIN = ["processing", "on_hold", "processing", "completed", "refunded"]


@pytest_asyncio.fixture(loop_scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def applied(http: aiohttp.ClientSession, worker: Worker) -> float:
    """The actions this worker took from its partitions (its /metrics)."""
    async with http.get(f"{worker.http_url}/metrics") as response:
        text = await response.text()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "orders_partition_actions_total"
    )


async def direct(http: aiohttp.ClientSession, worker: Worker) -> bool:
    """Whether this worker's router applies actions itself (its /metrics)."""
    async with http.get(f"{worker.http_url}/metrics") as response:
        text = await response.text()
    return any(
        sample.value == 1
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "orders_action_routing_direct"
    )


async def ready(http: aiohttp.ClientSession, worker: Worker) -> bool:
    try:
        async with http.get(f"{worker.http_url}/health/ready") as response:
            return response.status == 200
    except aiohttp.ClientError:
        return False


async def act_on_all(client: AmqpClient, orders: list[dict[str, Any]]) -> None:
    """Each order's chain, the orders interleaved; every other step names the order by
    `order_id`, so the router must know them as one order."""
    for step, status in enumerate(CHAIN):
        for order in orders:
            name = {"id": order["id"]} if step % 2 else {"order_id": order["order_id"]}
            await client.publish(
                "orders.action", {**name, "action": "update_status", "status": status}
            )


def assert_in_order(changes: list[Any], orders: list[dict[str, Any]]) -> None:
    for order in orders:
        mine = sorted(
            (e.body for e in changes if e.body["id"] == order["id"]), key=lambda b: b["version"]
        )
        assert [body["to_status"] for body in mine] == CHAIN, order["id"]
        assert [body["version"] for body in mine] == list(range(2, len(CHAIN) + 2))


async def test_workers_share_the_actions_and_a_killed_workers_share_moves(
    amqp_client: AmqpClient, launcher: WorkerLauncher, http: aiohttp.ClientSession
) -> None:
    client = amqp_client
    await client.ensure_open()
    database = new_database()
    first = launcher.start(database, FAST_MEMBERSHIP)
    await wait_until_ready(client, first)
    events = await EventCollector.start(client.connection)
    try:
        customer = new_customer_id()

        def changes_of(orders: list[dict[str, Any]]) -> Any:
            ids = {order["id"] for order in orders}
            return events.wait_for_all(
                lambda e: e.routing_key == "order.status_changed" and e.body["id"] in ids,
                len(orders) * len(CHAIN),
                timeout=120,
            )

        # One worker alone applies every action, without the partition hop.
        alone = [await place(client, simple_order(customer)) for _ in range(16)]
        await act_on_all(client, alone)
        assert_in_order(await changes_of(alone), alone)
        await counted(http, [first], len(alone) * len(CHAIN))
        assert await direct(http, first)

        # A second worker joins: once it is among the live workers, it takes its share.
        second = launcher.start(database, FAST_MEMBERSHIP)
        # (any worker answers the readiness request over AMQP: ask this one over HTTP)
        await eventually(lambda: ready(http, second), timeout=60, what="second worker ready")
        await asyncio.sleep(2.0)  # four renewals: each worker sees the other
        before = [await applied(http, worker) for worker in (first, second)]
        shared = [await place(client, simple_order(customer)) for _ in range(40)]
        await act_on_all(client, shared)
        assert_in_order(await changes_of(shared), shared)
        await counted(http, [first, second], sum(before) + len(shared) * len(CHAIN))
        after = [await applied(http, worker) for worker in (first, second)]
        shares = [b - a for a, b in zip(before, after, strict=True)]
        assert sum(shares) == len(shared) * len(CHAIN)
        assert min(shares) >= 0.3 * sum(shares), shares
        assert not await direct(http, first)

        # The first worker is killed mid-flow: its partitions move to the second, nothing is
        # lost and every order's chain is still applied in order.
        last = [await place(client, simple_order(customer)) for _ in range(40)]
        publishing = asyncio.create_task(act_on_all(client, last))
        await eventually(
            lambda: _more_than(http, first, after[0] + 20), timeout=30, what="first at work"
        )
        first.process.send_signal(signal.SIGKILL)
        await publishing
        assert_in_order(await changes_of(last), last)

        # From now on the second worker applies every action.
        before_alone = await applied(http, second)
        final = [await place(client, simple_order(customer)) for _ in range(16)]
        await act_on_all(client, final)
        assert_in_order(await changes_of(final), final)
        # (at least: a redelivered copy of an action the killed worker had applied counts too)
        await counted(http, [second], before_alone + len(final) * len(CHAIN), at_least=True)

        # ... and, alone, it applies the next actions without the partition hop: it switches
        # when it routes one (once its barriers pass; after a round that timed out under
        # load, 10 s later).
        async def applies_alone() -> bool:
            order = await place(client, simple_order(customer))
            await client.publish(
                "orders.action",
                {"id": order["id"], "action": "update_status", "status": "processing"},
            )
            return await direct(http, second)

        await eventually(applies_alone, timeout=40, what="second applies alone")
        assert events.matching(lambda e: e.routing_key == "order.command_rejected") == []
    finally:
        await events.stop()


async def counted(
    http: aiohttp.ClientSession, workers: list[Worker], total: float, *, at_least: bool = False
) -> None:
    """The workers' counts add up to `total` (they count an action just after its event)."""

    seen: list[float] = []

    async def adds_up() -> bool:
        seen.append(sum([await applied(http, worker) for worker in workers]))
        return seen[-1] >= total if at_least else seen[-1] == total

    try:
        await eventually(adds_up, timeout=10, what=f"{total} actions counted")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; counted {seen[-1]}") from None


async def _more_than(http: aiohttp.ClientSession, worker: Worker, count: float) -> bool:
    return await applied(http, worker) > count
