"""Placing in micro-batches (`Placer`, through `OrderService.place`) on in-memory fakes of
its ports (tests/unit/fakes.py): repeated keys within a batch and across batches, keyless
requests, message ids as keys, order numbers drawn again. Requests submitted together
(`asyncio.gather`) share one batch. Each test reads the stored orders, the events their
writes carry (in the order written, as the events feed publishes them) and the replies.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from schemas.commands import OrderActionAdapter
from service.application.delivery import Delivery
from service.application.placing import NUMBER_DRAWS, Placed
from service.application.usecases import OrderService
from service.domain.errors import IdempotencyConflict
from service.domain.idempotency import RequestKey
from tests.unit.builders import wire_place
from tests.unit.fakes import World

PLACED = "order.placed"


async def together(
    worker: OrderService, *requests: tuple[dict[str, Any], Delivery]
) -> list[Placed | BaseException]:
    """Place `requests` in one batch; each one's reply or error, in order."""
    return await asyncio.gather(
        *(worker.place(wire_place(**body), delivery) for body, delivery in requests),
        return_exceptions=True,
    )


def placed(results: list[Placed | BaseException]) -> list[Placed]:
    assert all(isinstance(result, Placed) for result in results), results
    return [result for result in results if isinstance(result, Placed)]


async def test_keyless_requests_each_get_their_own_order() -> None:
    world = World()
    results = placed(await together(world.worker(), *[({}, Delivery())] * 3))
    assert [r.replayed for r in results] == [False] * 3
    assert sorted(world.store.orders) == sorted(r.order.id for r in results) == [1, 2, 3]
    assert len({r.order.order_id for r in results}) == 3
    assert world.routing_keys() == [PLACED] * 3
    assert all(s.placed_by is None for s in world.store.orders.values())


async def test_a_key_repeated_in_one_batch_with_the_same_body_places_one_order() -> None:
    world = World()
    key = {"idempotency_key": "k-1"}
    results = placed(
        await together(
            world.worker(),
            (key, Delivery(correlation_id="c-1")),
            (key, Delivery(correlation_id="c-2")),
            (key, Delivery(correlation_id="c-3")),
        )
    )
    assert [r.replayed for r in results] == [False, True, True]
    assert results[0].order == results[1].order == results[2].order
    assert list(world.store.orders) == [results[0].order.id]
    placed_by = world.store.orders[results[0].order.id].placed_by
    assert placed_by is not None
    assert placed_by.key == RequestKey("k-1")
    assert world.routing_keys() == [PLACED]
    assert world.store.written[0].correlation_id == "c-1"  # the first request placed it


async def test_a_key_repeated_in_one_batch_with_another_body_is_a_conflict() -> None:
    world = World()
    results = await together(
        world.worker(),
        ({"idempotency_key": "k-1"}, Delivery()),
        ({"idempotency_key": "k-1", "notes": "another body"}, Delivery()),
        ({"idempotency_key": "k-1"}, Delivery()),
    )
    first, conflict, replay = results
    assert isinstance(first, Placed)
    assert not first.replayed
    assert isinstance(conflict, IdempotencyConflict)
    assert conflict.code == "idempotency_conflict"
    assert isinstance(replay, Placed)
    assert replay.replayed
    assert replay.order == first.order
    assert list(world.store.orders) == [first.order.id]
    assert world.store.orders[first.order.id].order.notes == "Please call before arrival"
    assert world.routing_keys() == [PLACED]


async def test_a_key_placed_in_an_earlier_batch_replays_or_conflicts() -> None:
    world = World()
    worker = world.worker()
    (first,) = placed(await together(worker, ({"idempotency_key": "k-1"}, Delivery())))
    results = await together(
        world.worker(),  # another worker: nothing remembered, the store knows the key
        ({"idempotency_key": "k-1"}, Delivery()),
        ({"idempotency_key": "k-1", "customer_id": "CUST-2"}, Delivery()),
        ({"idempotency_key": "k-2"}, Delivery()),
    )
    replay, conflict, fresh = results
    assert isinstance(replay, Placed)
    assert replay.replayed
    assert replay.order == first.order
    assert isinstance(conflict, IdempotencyConflict)
    assert isinstance(fresh, Placed)
    assert not fresh.replayed
    assert sorted(world.store.orders) == [first.order.id, fresh.order.id]
    assert world.routing_keys() == [PLACED, PLACED]


async def test_a_message_id_keys_a_keyless_request_in_a_namespace_of_its_own() -> None:
    world = World()
    results = placed(
        await together(
            world.worker(),
            ({}, Delivery(message_id="m-1")),
            ({}, Delivery(message_id="m-1")),  # a redelivery
            ({"idempotency_key": "m-1"}, Delivery()),  # the caller's key: not the message id
        )
    )
    assert [r.replayed for r in results] == [False, True, False]
    assert results[0].order == results[1].order != results[2].order
    assert len(world.store.orders) == 2
    assert world.routing_keys() == [PLACED, PLACED]


async def test_a_key_placed_by_another_worker_meanwhile_replays_its_order() -> None:
    """Another worker places the key between this one's look-up and its insert: the store
    refuses the duplicate, and the request replays the other worker's order."""
    world = World()
    other = world.worker()
    theirs: list[Placed] = []

    async def place_meanwhile() -> None:
        theirs.append(await other.place(wire_place(idempotency_key="k-1"), Delivery()))

    world.store.before_inserts.append(place_meanwhile)
    (mine,) = placed(await together(world.worker(), ({"idempotency_key": "k-1"}, Delivery())))
    assert mine.replayed
    assert mine.order == theirs[0].order
    assert list(world.store.orders) == [theirs[0].order.id]
    assert world.routing_keys() == [PLACED]


async def test_a_taken_order_number_is_drawn_again() -> None:
    """Taken by an earlier order, or by another order of the same batch: drawn again."""
    world = World()
    await together(world.worker(order_numbers=lambda: 100_000_001), ({}, Delivery()))
    numbers = iter([100_000_001, 100_000_002, 100_000_002, 100_000_003, 100_000_004])
    results = placed(
        await together(world.worker(order_numbers=numbers.__next__), *[({}, Delivery())] * 3)
    )
    assert [r.order.order_id for r in results] == [100_000_003, 100_000_002, 100_000_004]
    assert {id: s.order.order_id for id, s in world.store.orders.items()} == {
        1: 100_000_001,
        2: 100_000_003,
        3: 100_000_002,
        4: 100_000_004,
    }
    assert [r.order for r in results] == [world.store.orders[id].order for id in (2, 3, 4)]
    assert sorted(b["order"]["order_id"] for b in world.bodies()) == [
        100_000_001,
        100_000_002,
        100_000_003,
        100_000_004,
    ]


async def test_an_order_number_taken_at_every_draw_gives_up_and_stores_nothing() -> None:
    world = World()
    await together(world.worker(order_numbers=lambda: 100_000_001), ({}, Delivery()))
    taken = itertools.repeat(100_000_001).__next__
    (failed,) = await together(world.worker(order_numbers=taken), ({}, Delivery()))
    assert isinstance(failed, RuntimeError)
    assert len(world.store.orders) == 1
    assert world.routing_keys() == [PLACED]
    assert NUMBER_DRAWS > 1


@pytest.mark.parametrize("keyed", [True, False])
async def test_the_placed_order_is_remembered_for_the_next_action(keyed: bool) -> None:
    world = World()
    worker = world.worker()
    body = {"idempotency_key": "k-1"} if keyed else {}
    (first,) = placed(await together(worker, (body, Delivery())))
    after = await worker.act(
        OrderActionAdapter.validate_python({"id": first.order.id, "action": "cancel"}),
        Delivery(),
    )
    assert world.store.reads == 0
    assert (after.status, after.version) == ("cancelled", 2)
    assert world.store.orders[first.order.id].order == after
