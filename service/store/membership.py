"""The live workers, as MongoDB sees them: one entry per worker process, renewed every few
seconds, so that the workers agree on who applies which action partition
(service/worker/partitions.py).

Times are the server's (`$currentDate`, `$$NOW`), so clocks of different hosts never
disagree about whether an entry is fresh. An entry left by a killed worker ages out of
`live()` after `lease_seconds` and is deleted by a TTL index later.
"""

from __future__ import annotations

from dataclasses import dataclass

from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase

from service.store.client import Document

WORKERS = "workers"
FORGOTTEN_AFTER_SECONDS = 3600
"""When the TTL index deletes an entry nobody renewed."""


@dataclass(frozen=True)
class Member:
    worker_id: str
    partitions: int
    """The partition count the worker was configured with."""


class Membership:
    def __init__(self, db: AsyncDatabase[Document], *, lease_seconds: float) -> None:
        self._workers = db[WORKERS]
        self._lease_ms = int(lease_seconds * 1000)

    async def ensure_indexes(self) -> None:
        await self._workers.create_indexes(
            [
                IndexModel(
                    [("seen_at", ASCENDING)],
                    name="seen_at_ttl",
                    expireAfterSeconds=FORGOTTEN_AFTER_SECONDS,
                )
            ]
        )

    async def renew(self, member: Member) -> None:
        """This worker is alive (and consuming every partition)."""
        await self._workers.update_one(
            {"_id": member.worker_id},
            {"$set": {"partitions": member.partitions}, "$currentDate": {"seen_at": True}},
            upsert=True,
        )

    async def leave(self, worker_id: str) -> None:
        await self._workers.delete_one({"_id": worker_id})

    async def live(self) -> list[Member]:
        """The workers whose entry was renewed within the lease, by id."""
        fresh = {"$gt": ["$seen_at", {"$subtract": ["$$NOW", self._lease_ms]}]}
        return [
            Member(str(doc["_id"]), int(doc.get("partitions", 0)))
            async for doc in self._workers.find({"$expr": fresh}).sort("_id", ASCENDING)
        ]
