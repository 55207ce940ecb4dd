"""The ports: what the use cases need from the outside world, as Protocols.

The use cases (usecases.py, placing.py) are typed against these, not against MongoDB: the
composition root (service/bootstrap.py) hands them the store's classes (service/store),
which fit by their shape, and the unit tests hand them in-memory fakes
(tests/unit/fakes.py). What the ports take and return are the records of
service/domain/records.py.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, Protocol

from schemas.queries import ListOrders, OrderFilters
from service.domain.idempotency import RequestKey
from service.domain.model import Order
from service.domain.order import Change
from service.domain.records import (
    Page,
    PlacedBefore,
    Placement,
)


class StorePort(Protocol):
    """The orders, each write with its event (service/store/orders.py `OrderStore`; the
    events feed publishes them: service/store/outbox.py)."""

    async def by_id(self, id: int) -> Order | None:
        """The order with this database id, or None: a read of its own, at once (a query's:
        its latency first)."""

    async def load(self, id: int) -> Order | None:
        """`by_id`, in one read with the others that arrive together or while one runs (an
        action's: its throughput first)."""

    async def by_order_id(self, order_id: int) -> Order | None:
        """The order with this public order number, or None."""

    async def apply(self, change: Change, correlation_id: str | None, payload: bytes) -> bool:
        """Write `change` only if the order is still at the status and version of
        `change.before`, with its event (body `payload`) in the same write, for the events
        feed to publish. Whether it was written; if not, the order changed meanwhile (or is
        gone)."""

    async def allocate_ids(self, count: int) -> range:
        """`count` new consecutive database ids."""

    async def insert_many(self, placements: Sequence[Placement]) -> list[Exception | None]:
        """Store new orders, each with its first event. Per placement: None,
        or why it was not stored: `DuplicatePlacement` (its key placed an order already),
        `DuplicateOrderNumber` (its public number is taken), or another error."""

    async def by_idempotency_keys(
        self, keys: Collection[RequestKey]
    ) -> Mapping[RequestKey, PlacedBefore]:
        """The orders placed by any of `keys`, each with the stamp of the request that did."""


class QueriesPort(Protocol):
    """The list query (service/store/queries.py `OrderQueries`)."""

    async def page(self, query: ListOrders) -> Page:
        """One page of the orders matching `query`."""


class StatsPort(Protocol):
    """Counts and revenue (service/store/stats.py `OrderStats`)."""

    async def compute(self, filters: OrderFilters, currency: str) -> dict[str, Any]:
        """The statistics of the orders matching `filters`, revenue in `currency`."""
