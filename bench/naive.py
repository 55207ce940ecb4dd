"""The baseline: a hand-written consumer that does one message at a time, the way a first
version written straight against aio-pika and PyMongo would. Prefetch 256, `queue.iterator()`,
and per message: parse, one write with majority write concern, one confirmed event, ack."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange, AbstractQueue
from bson import ObjectId
from pymongo import AsyncMongoClient, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection

from bench.amqp import EXAMPLE_ORDER, encode, preload

PREFETCH = 256
PLACE_QUEUE = "bench.naive.place"
ACTION_QUEUE = "bench.naive.action"
EVENTS_EXCHANGE = "bench.naive.events"
EVENTS_SINK = "bench.naive.events.sink"

Doc = dict[str, Any]


@dataclass(frozen=True)
class NaiveRun:
    messages: int
    seconds: float
    """First delivery to last ack."""
    events: int

    @property
    def per_second(self) -> float:
        return self.messages / self.seconds


def _now() -> datetime:
    return datetime.now(UTC)


def _event(event_type: str, body: Doc) -> bytes:
    return encode(
        {
            "event_id": uuid.uuid4().hex,
            "event_type": event_type,
            "occurred_at": _now().isoformat(),
            **body,
        }
    )


async def _publish_event(exchange: AbstractExchange, routing_key: str, body: bytes) -> None:
    """One persistent event; returns when the broker confirmed it."""
    await exchange.publish(
        aio_pika.Message(
            body, content_type="application/json", delivery_mode=aio_pika.DeliveryMode.PERSISTENT
        ),
        routing_key=routing_key,
    )


async def _declare(channel: AbstractChannel, name: str) -> AbstractQueue:
    queue = await channel.declare_queue(name, durable=True)
    await queue.purge()
    return queue


async def _sink(channel: AbstractChannel) -> tuple[AbstractExchange, AbstractQueue]:
    """The events exchange, with a queue bound so events are routed and stored (as the
    worker's are, to the bench's event counter), emptied before each run."""
    exchange = await channel.declare_exchange(
        EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
    )
    sink = await channel.declare_queue(EVENTS_SINK, exclusive=True)
    await sink.bind(exchange, routing_key="#")
    await sink.purge()
    return exchange, sink


async def _sink_depth(channel: AbstractChannel) -> int:
    queue = await channel.declare_queue(EVENTS_SINK, passive=True)
    return int(queue.declaration_result.message_count or 0)


async def run_place(
    connection: AbstractConnection, orders: AsyncCollection[Doc], n: int
) -> NaiveRun:
    """Pre-load N copies of the example order, then consume them one at a time."""
    channel = await connection.channel()  # publisher confirms on
    await channel.set_qos(prefetch_count=PREFETCH)
    queue = await _declare(channel, PLACE_QUEUE)
    exchange, _ = await _sink(channel)
    body = encode(EXAMPLE_ORDER)
    await preload(channel, channel.default_exchange, PLACE_QUEUE, [body] * n)

    loop = asyncio.get_running_loop()
    first: float | None = None
    done = 0
    async with queue.iterator() as messages:
        async for message in messages:
            if first is None:
                first = loop.time()
            order = json.loads(message.body)
            now = _now()
            order |= {"status": "pending", "version": 1, "created_at": now, "updated_at": now}
            result = await orders.insert_one(order)
            order["id"] = str(result.inserted_id)
            del order["_id"]
            order["created_at"] = order["updated_at"] = now.isoformat()
            await _publish_event(exchange, "order.placed", _event("order.placed", {"order": order}))
            await message.ack()
            done += 1
            if done == n:
                break
    seconds = loop.time() - (first or loop.time())
    events = await _sink_depth(channel)
    await channel.close()
    return NaiveRun(n, seconds, events)


async def run_action(
    connection: AbstractConnection, orders: AsyncCollection[Doc], source: str, target: str
) -> NaiveRun:
    """One `update_status` per order in the collection, pre-loaded, then consumed one at a
    time with a conditional `find_one_and_update` (status in the filter)."""
    ids = [doc["_id"] async for doc in orders.find({"status": source}, {"_id": 1})]
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=PREFETCH)
    queue = await _declare(channel, ACTION_QUEUE)
    exchange, _ = await _sink(channel)
    bodies = [encode({"id": str(oid), "action": "update_status", "status": target}) for oid in ids]
    await preload(channel, channel.default_exchange, ACTION_QUEUE, bodies)

    loop = asyncio.get_running_loop()
    first: float | None = None
    done = 0
    async with queue.iterator() as messages:
        async for message in messages:
            if first is None:
                first = loop.time()
            action = json.loads(message.body)
            now = _now()
            after = await orders.find_one_and_update(
                {"_id": ObjectId(action["id"]), "status": source},
                {
                    "$set": {"status": action["status"], "updated_at": now},
                    "$inc": {"version": 1},
                    "$push": {
                        "status_history": {"from": source, "to": action["status"], "at": now}
                    },
                },
                projection={"customer_id": 1, "version": 1},
                return_document=ReturnDocument.AFTER,
            )
            if after is not None:
                event = {
                    "id": action["id"],
                    "customer_id": after["customer_id"],
                    "from_status": source,
                    "to_status": action["status"],
                    "version": after["version"],
                }
                await _publish_event(
                    exchange,
                    "order.status_changed",
                    _event("order.status_changed", event),
                )
            await message.ack()
            done += 1
            if done == len(ids):
                break
    seconds = loop.time() - (first or loop.time())
    events = await _sink_depth(channel)
    await channel.close()
    return NaiveRun(len(ids), seconds, events)


def naive_client(url: str) -> AsyncMongoClient[Doc]:
    """Plain PyMongo async with majority writes, as the naive consumer would open it."""
    return AsyncMongoClient(url, w="majority", tz_aware=True)
