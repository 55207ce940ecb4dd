"""Placing orders in micro-batches: one look-up of idempotency keys, one block of ids, one
`insert_many` (each order with its event, which the events feed publishes).

Every request keeps its own outcome: a new order, the first order of a repeated key with
the same body, an `IdempotencyConflict` for a repeated key with another body, or an
exception, so each message still gets its own reply and ack.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from schemas import commands as wire
from service.adapters.events import event_payload
from service.application.commands import place_command
from service.application.delivery import Delivery
from service.application.idempotency import place_stamp
from service.application.ports import StorePort
from service.batching import MicroBatcher
from service.domain import order as domain
from service.domain.commands import PlaceOrder
from service.domain.errors import IdempotencyConflict
from service.domain.idempotency import RequestKey, RequestStamp, is_repeat
from service.domain.model import Order
from service.domain.records import (
    DuplicateOrderNumber,
    DuplicatePlacement,
    PlacedBefore,
    Placement,
)

NUMBER_DRAWS = 5
"""How often a new order may draw a public order number that is taken before giving up."""


@dataclass(frozen=True)
class Placed:
    order: Order
    replayed: bool


Slot = RequestKey | int
"""Requests with the same key share a slot; keyless ones each have their own."""


@dataclass(frozen=True)
class PlaceRequest:
    command: PlaceOrder
    delivery: Delivery
    stamp: RequestStamp | None

    @property
    def key(self) -> RequestKey | None:
        return None if self.stamp is None else self.stamp.key


Outcome = Placed | PlacedBefore | BaseException
"""A slot's outcome: placed now, placed before (by that key), or what went wrong."""


class Placer:
    def __init__(
        self,
        store: StorePort,
        *,
        default_currency: str,
        clock: Callable[[], datetime],
        order_numbers: Callable[[], int],
        batch_size: int,
        batch_wait: float,
    ) -> None:
        self._store = store
        self._currency = default_currency
        self._clock = clock
        self._order_numbers = order_numbers
        self._batcher = MicroBatcher(self._place_batch, max_size=batch_size, max_wait=batch_wait)

    async def place(self, command: wire.PlaceOrder, delivery: Delivery) -> Placed:
        """Create the order once per idempotency key (else per AMQP message id)."""
        stamp = place_stamp(command, delivery.message_id)
        request = PlaceRequest(place_command(command), delivery, stamp)
        return await self._batcher.submit(request)

    async def _place_batch(self, requests: Sequence[PlaceRequest]) -> list[Placed | BaseException]:
        """Requests with one key share a slot: the order that key placed before, or else
        the one the slot's first request places now. Every other request of the slot is a
        replay of it (the same fingerprint) or an `IdempotencyConflict`."""
        keys = {request.key for request in requests if request.key is not None}
        known = await self._store.by_idempotency_keys(keys) if keys else {}
        outcome: dict[Slot, Outcome] = {key: known[key] for key in known}
        fresh: dict[Slot, PlaceRequest] = {}
        for index, request in enumerate(requests):
            slot = _slot(request, index)
            if slot not in outcome and slot not in fresh:
                fresh[slot] = request
        if fresh:
            outcome.update(await self._create(fresh))
        results: list[Placed | BaseException] = []
        for index, request in enumerate(requests):
            slot = _slot(request, index)
            result = outcome[slot]
            if isinstance(result, PlacedBefore):
                results.append(_repeat(request, result.stamp, result.order))
            elif isinstance(result, Placed) and fresh[slot] is not request:
                results.append(_repeat(request, fresh[slot].stamp, result.order))
            else:
                results.append(result)
        return results

    async def _create(self, fresh: dict[Slot, PlaceRequest]) -> dict[Slot, Outcome]:
        ids = iter(await self._store.allocate_ids(len(fresh)))
        pending = {slot: self._placement(request, next(ids)) for slot, request in fresh.items()}
        created: dict[Slot, Outcome] = {}
        for _ in range(NUMBER_DRAWS):
            slots = list(pending)
            retry = await self._insert(pending, slots, fresh, created)
            if not retry:
                return created
            pending = retry
        for slot in pending:
            created[slot] = RuntimeError("no free public order number after several draws")
        return created

    async def _insert(
        self,
        pending: dict[Slot, Placement],
        slots: list[Slot],
        fresh: dict[Slot, PlaceRequest],
        created: dict[Slot, Outcome],
    ) -> dict[Slot, Placement]:
        """One draw: insert the placements of `slots` and record each outcome in `created`;
        the placements to draw again (their public order number was taken)."""
        errors = await self._store.insert_many([pending[slot] for slot in slots])
        retry: dict[Slot, Placement] = {}
        for slot, error in zip(slots, errors, strict=True):
            placement = pending[slot]
            if error is None:
                created[slot] = Placed(placement.order, replayed=False)
            elif isinstance(error, DuplicateOrderNumber):
                retry[slot] = self._placement(fresh[slot], placement.order.id)
            elif isinstance(error, DuplicatePlacement) and placement.stamp is not None:
                created[slot] = await self._first(placement.stamp.key)
            else:
                created[slot] = error
        return retry

    def _placement(self, request: PlaceRequest, id: int) -> Placement:
        order, event = domain.place(
            request.command,
            id=id,
            order_id=self._order_numbers(),
            now=self._clock(),
            default_currency=self._currency,
        )
        return Placement(
            order, event, request.stamp, request.delivery.correlation_id, event_payload(event)
        )

    async def _first(self, key: RequestKey) -> PlacedBefore | IdempotencyConflict:
        """The order another process placed with `key` first (the unique index said so).
        If the look-up does not find it under `key`'s namespace, an order placed before the
        namespaces were separate holds the same string as a message id: a conflict."""
        first = (await self._store.by_idempotency_keys([key])).get(key)
        return first or IdempotencyConflict(key.value, from_message=key.from_message)


def _slot(request: PlaceRequest, index: int) -> Slot:
    """Requests with the same key share a slot; keyless ones each have their own."""
    return request.key if request.key is not None else index


def _repeat(
    request: PlaceRequest, first: RequestStamp | None, order: Order
) -> Placed | BaseException:
    """A request whose key placed `order` (`first` is the stamp of the request that did):
    a replay of it, or a conflict with it."""
    assert request.stamp is not None  # only keyed requests share a slot
    try:
        is_repeat(request.stamp, first)
    except IdempotencyConflict as conflict:
        return conflict
    return Placed(order, replayed=True)
