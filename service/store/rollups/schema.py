"""The rollups' collections, the marker of a completed build, and their indexes."""

from __future__ import annotations

from pymongo import DESCENDING
from pymongo.asynchronous.database import AsyncDatabase

from service.store.client import ORDERS, Document

ORDER_COUNTS = "order_counts"
CUSTOMER_COUNTS = "customer_counts"
STATUS_COUNTS = "status_counts"
ROLLUP_STATE = "rollup_state"
BUILT = "built-v4"
"""The marker of a completed build; a new name when the rollups change shape or how they
are kept, so a worker of this version rebuilds rollups an earlier version made (v2 added
`status_counts`, v3 each customer's breakdown by status and currency and by day in
`customer_counts`, v4 the rollups' change feed instead of deltas pending in the orders)."""
OLD_PENDING_INDEX = "rollups_pending"
"""The index of the deltas orders kept pending before v4; nothing writes them any more."""


async def ensure_rollup_indexes(db: AsyncDatabase[Document], currency: str) -> None:
    await db[CUSTOMER_COUNTS].create_index(
        [(f"kept.{currency}", DESCENDING), ("n", DESCENDING), ("_id", 1)],
        name=f"top_{currency}",
    )
    await db[CUSTOMER_COUNTS].create_index([("n", 1)], name="orders")
    if OLD_PENDING_INDEX in await db[ORDERS].index_information():
        await db[ORDERS].drop_index(OLD_PENDING_INDEX)
