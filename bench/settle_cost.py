"""What mongod spends to settle a change two ways, with the service's own order documents
and indexes: `uv run python -m bench.settle_cost` (docs/benchmarks.md, "One write per change
through the change stream, measured"). Not part of `make bench`.

- **A, a second write per change**: a batch written (`insert_many` of new orders, or a
  `bulk_write` that sets a status, the deltas and the event), then per batch one
  transaction that `$inc`s a rollup document and clears the batch's events (a second write
  of each order, as the outbox's removal and the rollup applier's round were before the
  change feeds; without the applier's `$facet` over the deltas).
- **B, one write**: the same writes, a change stream on the collection read by a second
  task, and per batch of changes read one transaction that `$inc`s the rollup document and
  upserts a checkpoint holding the stream's resume token.

Prints mongod's CPU and the documents written (serverStatus) per change, for places and
then actions, for each variant in turn (`SETTLE_ORDER`, default ABAB). `SETTLE_N` changes
per run (20,000), `SETTLE_BATCH` per batch (70).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from bench.amqp import EXAMPLE_ORDER
from bench.cpu import cpu_seconds
from bench.infra import infrastructure, log
from bench.measure import documents_written
from schemas import commands as wire
from service.adapters.events import event_payload
from service.application.commands import place_command
from service.domain import order as domain
from service.domain.records import Placement
from service.store.client import Document, connect, database, ensure_indexes
from service.store.orders import placement_document

N = int(os.environ.get("SETTLE_N", "20000"))
BATCH = int(os.environ.get("SETTLE_BATCH", "70"))
LOGS = Path(".bench/settle-cost")

Variant = Callable[
    [AsyncMongoClient[Document], AsyncDatabase[Document], list[list[Document]], str],
    Awaitable[None],
]


def orders(count: int) -> list[Document]:
    """`count` new order documents as the worker stores them (event and deltas included)."""
    command = place_command(wire.PlaceOrder.model_validate(EXAMPLE_ORDER))
    numbers = itertools.count(100_000)
    made = []
    for id in range(1, count + 1):
        order, event = domain.place(
            command, id=id, order_id=next(numbers), now=datetime.now(UTC), default_currency="EUR"
        )
        placement = Placement(order, event, None, "bench", event_payload(event))
        made.append(placement_document(placement))
    return made


async def write(db: AsyncDatabase[Document], batch: Sequence[Document], kind: str) -> None:
    if kind == "place":
        await db.orders.insert_many(batch, ordered=False)
        return
    await db.orders.bulk_write(
        [
            UpdateOne(
                {"_id": doc["_id"]},
                {
                    "$set": {
                        "status": "processing",
                        "version": 2,
                        "updated_at": datetime.now(UTC),
                        "rollup": {"v": 2, "d": doc["rollup"]["d"]},
                        "event": doc["event"],
                    },
                },
            )
            for doc in batch
        ],
        ordered=False,
    )


async def two_writes(
    client: AsyncMongoClient[Document],
    db: AsyncDatabase[Document],
    batches: list[list[Document]],
    kind: str,
) -> None:
    for batch in batches:
        await write(db, batch, kind)
        ids = [doc["_id"] for doc in batch]

        async def settle(session: AsyncClientSession, ids: list[Any] = ids) -> None:
            await db.rollups.update_one(
                {"_id": "global"}, {"$inc": {"count": len(ids)}}, upsert=True, session=session
            )
            await db.orders.update_many(
                {"_id": {"$in": ids}},
                {"$set": {"event": None}},
                session=session,
            )

        async with client.start_session() as session:
            await session.with_transaction(settle)


async def one_write(
    client: AsyncMongoClient[Document],
    db: AsyncDatabase[Document],
    batches: list[list[Document]],
    kind: str,
) -> None:
    total = sum(len(batch) for batch in batches)
    watching = asyncio.Event()
    if kind == "place":
        pipeline: list[Document] = [
            {"$match": {"operationType": "insert"}},
            {"$project": {"fullDocument.event": 1, "fullDocument.rollup": 1}},
        ]
    else:
        pipeline = [
            {"$match": {"operationType": "update"}},
            {"$project": {"updateDescription.updatedFields": 1}},
        ]

    async def relay() -> None:
        seen = 0
        async with await db.orders.watch(pipeline, max_await_time_ms=50) as stream:
            watching.set()
            while seen < total:
                changes: list[Document] = []
                while len(changes) < 500 and (change := await stream.try_next()) is not None:
                    changes.append(change)
                if not changes:
                    continue
                seen += len(changes)
                token = stream.resume_token

                async def settle(
                    session: AsyncClientSession, count: int = len(changes), token: Any = token
                ) -> None:
                    await db.rollups.update_one(
                        {"_id": "global"}, {"$inc": {"count": count}}, upsert=True, session=session
                    )
                    await db.checkpoints.update_one(
                        {"_id": "relay"}, {"$set": {"token": token}}, upsert=True, session=session
                    )

                async with client.start_session() as session:
                    await session.with_transaction(settle)

    reading = asyncio.create_task(relay())
    await watching.wait()
    for batch in batches:
        await write(db, batch, kind)
    await reading


async def run(url: str, mongod: int) -> None:
    client = connect(url)
    variants: dict[str, Variant] = {"A": two_writes, "B": one_write}
    try:
        for round, name in enumerate(os.environ.get("SETTLE_ORDER", "ABAB")):
            db = database(client, f"settle_cost_{round}")
            await ensure_indexes(db)
            docs = orders(N)
            batches = [docs[k : k + BATCH] for k in range(0, N, BATCH)]
            for kind in ("place", "action"):
                if kind == "action":  # both act on settled orders
                    await db.orders.update_many({}, {"$set": {"event": None}})
                written, cpu, started = (
                    await documents_written(db),
                    cpu_seconds(mongod),
                    time.monotonic(),
                )
                await variants[name](client, db, batches, kind)
                seconds = time.monotonic() - started
                used = (cpu_seconds(mongod) or 0.0) - (cpu or 0.0)
                per_change = (await documents_written(db) - written) / N
                log(
                    f"{name} {kind}: mongod {1000 * used / N:.3f} ms, "
                    f"{per_change:.3f} documents written per change, {N / seconds:,.0f}/s"
                )
    finally:
        await client.close()


def main() -> None:
    with infrastructure(LOGS) as infra:
        process = infra.mongo.process
        assert process is not None  # an embedded mongod of its own
        asyncio.run(run(infra.mongo.url, process.pid))


if __name__ == "__main__":
    main()
