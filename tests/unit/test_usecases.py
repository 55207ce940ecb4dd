"""The act loop of `OrderService.act` on in-memory fakes of its ports (tests/unit/fakes.py):
a decision on the remembered order, on a fresh read when that one is stale, again after a
lost race; no-ops, replays and conflicts. Each test reads the state left behind: the
stored orders, the events their writes carry (in the order written, as the events feed
publishes them), what the call returned.
"""

from __future__ import annotations

from typing import Any

import pytest

from schemas.commands import OrderAction, OrderActionAdapter
from schemas.queries import ListOrders
from service.application.delivery import Delivery
from service.application.usecases import DECISION_ATTEMPTS, OrderService
from service.domain.errors import (
    ConcurrentChange,
    IdempotencyConflict,
    InvalidTransition,
    OrderNotFound,
    VersionConflict,
)
from service.domain.model import Order
from tests.unit.builders import wire_place
from tests.unit.fakes import World

PLACED = "order.placed"
CHANGED = "order.status_changed"
METADATA = "order.metadata_updated"


def act(id: int, name: str, **fields: Any) -> OrderAction:
    return OrderActionAdapter.validate_python({"id": id, "action": name, **fields})


async def placed(world: World, worker: OrderService) -> Order:
    """An order placed by `worker` (which remembers it), its event published."""
    result = await worker.place(wire_place(), Delivery(correlation_id="place-1"))
    assert world.routing_keys() == [PLACED]
    return result.order


def stored(world: World, order: Order) -> Order:
    return world.store.orders[order.id].order


async def test_a_remembered_order_is_decided_without_a_read() -> None:
    world = World()
    worker = world.worker()
    order = await placed(world, worker)
    after = await worker.act(
        act(order.id, "update_status", status="processing"), Delivery(correlation_id="c-2")
    )
    assert world.store.reads == 0
    assert (after.status, after.version) == ("processing", 2)
    assert stored(world, order) == after
    assert world.routing_keys() == [PLACED, CHANGED]
    assert world.store.written[-1].correlation_id == "c-2"
    assert world.bodies()[-1]["to_status"] == "processing"


async def test_a_stale_remembered_order_is_decided_again_on_a_fresh_read() -> None:
    """The remembered order (version 1) refuses `expected_version` 2; the store has version
    2 (another worker's change), so the fresh read's decision stands."""
    world = World()
    worker, other = world.worker(), world.worker()
    order = await placed(world, worker)
    await other.act(act(order.id, "update_status", status="processing"), Delivery())
    after = await worker.act(act(order.id, "complete", expected_version=2), Delivery())
    assert world.store.reads == 2  # the other worker's read, and this one's fresh read
    assert (after.status, after.version) == ("completed", 3)
    assert stored(world, order) == after
    assert [(h.source, h.target) for h in after.status_history] == [
        (None, "pending"),
        ("pending", "processing"),
        ("processing", "completed"),
    ]
    assert world.routing_keys() == [PLACED, CHANGED, CHANGED]


async def test_a_stale_remembered_order_misses_its_write_and_is_decided_again() -> None:
    world = World()
    worker, other = world.worker(), world.worker()
    order = await placed(world, worker)
    await other.act(act(order.id, "update_metadata", metadata={"by": "other"}), Delivery())
    after = await worker.act(act(order.id, "update_status", status="confirmed"), Delivery())
    assert (after.status, after.version, after.metadata["by"]) == ("confirmed", 3, "other")
    assert stored(world, order) == after
    assert world.routing_keys() == [PLACED, METADATA, CHANGED]


async def test_a_lost_race_is_decided_again_on_a_re_read() -> None:
    """Between this worker's read and its write, another worker cancels the order: the
    conditional write misses, and on the re-read the transition is refused."""
    world = World()
    order = await placed(world, world.worker())
    worker, other = world.worker(), world.worker()

    async def cancel_meanwhile() -> None:
        await other.act(act(order.id, "cancel", reason="changed my mind"), Delivery())

    world.store.before_writes.append(cancel_meanwhile)
    with pytest.raises(InvalidTransition):
        await worker.act(act(order.id, "update_status", status="processing"), Delivery())
    after = stored(world, order)
    assert (after.status, after.version) == ("cancelled", 2)
    assert world.routing_keys() == [PLACED, CHANGED]
    assert world.bodies()[-1]["to_status"] == "cancelled"


async def test_a_lost_race_is_written_on_the_re_read_when_it_still_applies() -> None:
    world = World()
    order = await placed(world, world.worker())
    worker, other = world.worker(), world.worker()

    async def change_metadata_meanwhile() -> None:
        await other.act(act(order.id, "update_metadata", metadata={"by": "other"}), Delivery())

    world.store.before_writes.append(change_metadata_meanwhile)
    after = await worker.act(act(order.id, "update_status", status="on_hold"), Delivery())
    assert (after.status, after.version, after.metadata["by"]) == ("on_hold", 3, "other")
    assert stored(world, order) == after
    assert world.routing_keys() == [PLACED, METADATA, CHANGED]


async def test_a_race_lost_to_the_same_request_replays_the_winner() -> None:
    world = World()
    order = await placed(world, world.worker())
    worker, other = world.worker(), world.worker()
    request = act(order.id, "update_status", status="processing", request_id="r-1")

    async def same_request_meanwhile() -> None:
        await other.act(request, Delivery())

    world.store.before_writes.append(same_request_meanwhile)
    after = await worker.act(request, Delivery())
    assert (after.status, after.version) == ("processing", 2)
    assert stored(world, order) == after
    assert world.routing_keys() == [PLACED, CHANGED]  # applied once


async def test_an_order_that_keeps_changing_under_every_attempt_is_a_concurrent_change() -> None:
    world = World()
    order = await placed(world, world.worker())
    worker, other = world.worker(), world.worker()

    def meanwhile(n: int) -> Any:
        async def change() -> None:
            await other.act(act(order.id, "update_metadata", metadata={"n": n}), Delivery())

        return change

    world.store.before_writes.extend(meanwhile(n) for n in range(DECISION_ATTEMPTS))
    with pytest.raises(ConcurrentChange):
        await worker.act(act(order.id, "update_status", status="processing"), Delivery())
    after = stored(world, order)
    assert (after.status, after.version) == ("pending", 1 + DECISION_ATTEMPTS)
    assert world.routing_keys() == [PLACED] + [METADATA] * DECISION_ATTEMPTS


async def test_asking_for_the_status_it_has_is_a_no_op() -> None:
    world = World()
    worker = world.worker()
    order = await placed(world, worker)
    after = await worker.act(act(order.id, "update_status", status="pending"), Delivery())
    assert after == order
    assert stored(world, order) == order  # version 1: nothing written
    assert world.store.reads == 1  # a no-op on the remembered order is confirmed on a read
    assert world.routing_keys() == [PLACED]


async def test_a_replayed_request_is_applied_once() -> None:
    world = World()
    worker = world.worker()
    order = await placed(world, worker)
    request = act(order.id, "cancel", reason="too late", request_id="r-1")
    first = await worker.act(request, Delivery())
    again = await worker.act(request, Delivery())
    also = await world.worker().act(request, Delivery())  # another worker, from the store
    assert first == again == also == stored(world, order)
    assert (first.status, first.version) == ("cancelled", 2)
    assert len(first.status_history) == 2
    assert world.routing_keys() == [PLACED, CHANGED]


async def test_a_request_id_with_another_body_is_an_idempotency_conflict() -> None:
    world = World()
    worker = world.worker()
    order = await placed(world, worker)
    await worker.act(
        act(order.id, "update_status", status="processing", request_id="r-1"), Delivery()
    )
    for other in (worker, world.worker()):
        with pytest.raises(IdempotencyConflict) as refused:
            await other.act(
                act(order.id, "update_status", status="confirmed", request_id="r-1"), Delivery()
            )
        assert refused.value.code == "idempotency_conflict"
    after = stored(world, order)
    assert (after.status, after.version) == ("processing", 2)
    assert world.routing_keys() == [PLACED, CHANGED]


async def test_an_expected_version_behind_the_store_is_a_version_conflict() -> None:
    world = World()
    worker = world.worker()
    order = await placed(world, worker)
    await worker.act(act(order.id, "update_status", status="processing"), Delivery())
    with pytest.raises(VersionConflict) as refused:
        await worker.act(act(order.id, "complete", expected_version=1), Delivery())
    assert refused.value.code == "version_conflict"
    after = stored(world, order)
    assert (after.status, after.version) == ("processing", 2)
    assert world.routing_keys() == [PLACED, CHANGED]


async def test_an_unknown_order_is_not_found_by_either_number() -> None:
    world = World()
    worker = world.worker()
    with pytest.raises(OrderNotFound):
        await worker.act(act(41, "complete"), Delivery())
    with pytest.raises(OrderNotFound):
        await worker.act(
            OrderActionAdapter.validate_python({"order_id": 123_456_789, "action": "complete"}),
            Delivery(),
        )
    assert world.store.orders == {}
    assert world.store.written == []


async def test_an_order_is_found_by_its_public_number() -> None:
    world = World()
    order = await placed(world, world.worker())
    found = await world.worker().act(
        OrderActionAdapter.validate_python({"order_id": order.order_id, "action": "cancel"}),
        Delivery(),
    )
    assert (found.id, found.status) == (order.id, "cancelled")
    assert stored(world, order) == found


async def test_the_list_goes_through_the_queries_port() -> None:
    world = World()
    worker = world.worker()
    order = await placed(world, worker)
    page = await worker.list(ListOrders(customer_id=order.customer_id))
    assert (page.orders, page.total, page.last_page) == ([order], 1, 1)
    assert (await worker.list(ListOrders(customer_id="nobody"))).orders == []
