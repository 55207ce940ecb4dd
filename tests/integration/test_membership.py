"""The live workers in MongoDB (service/store/membership.py): renewed entries are live,
by id; an entry not renewed within the lease is not; one that left is gone."""

from __future__ import annotations

import asyncio

from pymongo.asynchronous.database import AsyncDatabase

from service.store.client import Document
from service.store.membership import WORKERS, Member, Membership


async def test_live_workers_are_the_renewed_ones_by_id(db: AsyncDatabase[Document]) -> None:
    membership = Membership(db, lease_seconds=0.5)
    await membership.ensure_indexes()
    await membership.renew(Member("worker-b", 8))
    await membership.renew(Member("worker-a", 8))
    assert await membership.live() == [Member("worker-a", 8), Member("worker-b", 8)]

    await asyncio.sleep(0.4)
    await membership.renew(Member("worker-b", 8))
    await asyncio.sleep(0.3)  # worker-a last renewed 0.7 s ago, by the server's clock
    assert await membership.live() == [Member("worker-b", 8)]

    await membership.leave("worker-b")
    assert await membership.live() == []
    assert await db[WORKERS].count_documents({}) == 1  # worker-a's entry waits for the TTL
