"""Placing orders in micro-batches: one look-up of idempotency keys, one block of ids, one
`insert_many`, the batch's events published together with confirms, one outbox clean-up.

Every request keeps its own outcome: a new order, the first order of a repeated key, or an
exception, so each message still gets its own reply and ack.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from schemas.commands import PlaceOrder
from service.batching import MicroBatcher
from service.domain import order as domain
from service.domain.order import Order
from service.store.orders import DuplicateOrderNumber, DuplicatePlacement, OrderStore, Placement
from service.store.outbox import OutboxRelay, PendingEvent
from service.wire import encode

NUMBER_DRAWS = 5
"""How often a new order may draw a public order number that is taken before giving up."""


@dataclass(frozen=True)
class Delivery:
    """What the transport knows about a request: its message id and correlation id."""

    message_id: str | None = None
    correlation_id: str | None = None
    reply: bool = True
    """Whether anybody waits for a reply (`reply_to`): without one, no reply data is built."""

    @property
    def key(self) -> str | None:
        """The idempotency key a delivery without one of its own is known by."""
        return None if self.message_id is None else f"amqp-message-id:{self.message_id}"


@dataclass(frozen=True)
class Placed:
    order: Order
    replayed: bool


@dataclass(frozen=True)
class PlaceRequest:
    command: PlaceOrder
    delivery: Delivery

    @property
    def key(self) -> str | None:
        return self.command.idempotency_key or self.delivery.key


class Placer:
    def __init__(
        self,
        store: OrderStore,
        relay: OutboxRelay,
        *,
        default_currency: str,
        clock: Callable[[], datetime],
        order_numbers: Callable[[], int],
        batch_size: int,
        batch_wait: float,
    ) -> None:
        self._store = store
        self._relay = relay
        self._currency = default_currency
        self._clock = clock
        self._order_numbers = order_numbers
        self._batcher = MicroBatcher(self._place_batch, max_size=batch_size, max_wait=batch_wait)

    async def place(self, command: PlaceOrder, delivery: Delivery) -> Placed:
        """Create the order once per idempotency key (else per AMQP message id)."""
        return await self._batcher.submit(PlaceRequest(command, delivery))

    async def _place_batch(self, requests: Sequence[PlaceRequest]) -> list[Placed | BaseException]:
        keys = {request.key for request in requests if request.key is not None}
        known = await self._store.by_idempotency_keys(keys) if keys else {}
        for order in {order.id: order for order in known.values()}.values():
            await self._relay.flush(order.id)  # a crash may have kept its event back
        outcome: dict[str | int, Placed | BaseException] = {
            key: Placed(order, replayed=True) for key, order in known.items()
        }
        fresh: dict[str | int, PlaceRequest] = {}
        leaders: dict[str | int, int] = {}
        for index, request in enumerate(requests):
            slot = _slot(request, index)
            leaders.setdefault(slot, index)
            if slot not in outcome and slot not in fresh:
                fresh[slot] = request
        if fresh:
            outcome.update(await self._create(fresh))
        results: list[Placed | BaseException] = []
        for index, request in enumerate(requests):
            slot = _slot(request, index)
            result = outcome[slot]
            if isinstance(result, Placed) and leaders[slot] != index:
                result = Placed(result.order, replayed=True)  # a repeat within the batch
            results.append(result)
        return results

    async def _create(
        self, fresh: dict[str | int, PlaceRequest]
    ) -> dict[str | int, Placed | BaseException]:
        ids = iter(await self._store.allocate_ids(len(fresh)))
        pending = {slot: self._placement(request, next(ids)) for slot, request in fresh.items()}
        created: dict[str | int, Placed | BaseException] = {}
        for _ in range(NUMBER_DRAWS):
            slots = list(pending)
            errors = await self._store.insert_many([pending[slot] for slot in slots])
            retry: dict[str | int, Placement] = {}
            new_events: list[tuple[int, PendingEvent]] = []
            for slot, error in zip(slots, errors, strict=True):
                placement = pending[slot]
                if error is None:
                    created[slot] = Placed(placement.order, replayed=False)
                    new_events.append((placement.order.id, _pending_event(placement)))
                elif isinstance(error, DuplicateOrderNumber):
                    retry[slot] = self._placement(fresh[slot], placement.order.id)
                elif isinstance(error, DuplicatePlacement) and placement.idempotency_key:
                    created[slot] = await self._first(placement.idempotency_key)
                else:
                    created[slot] = error
            await self._relay.publish_new(new_events)
            if not retry:
                return created
            pending = retry
        for slot in pending:
            created[slot] = RuntimeError("no free public order number after several draws")
        return created

    def _placement(self, request: PlaceRequest, id: int) -> Placement:
        order, event = domain.place(
            request.command,
            id=id,
            order_id=self._order_numbers(),
            now=self._clock(),
            default_currency=self._currency,
        )
        return Placement(order, event, request.key, request.delivery.correlation_id)

    async def _first(self, key: str) -> Placed:
        first = await self._store.by_idempotency_keys([key])
        return Placed(first[key], replayed=True)


def _pending_event(placement: Placement) -> PendingEvent:
    event = placement.event
    return PendingEvent(
        event.event_id, event.routing_key, encode(event.body), placement.correlation_id
    )


def _slot(request: PlaceRequest, index: int) -> str | int:
    """Requests with the same key share a slot; keyless ones each have their own."""
    return request.key if request.key is not None else index
