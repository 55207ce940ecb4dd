"""The event history stream as the worker declares it (service/bootstrap.py) on the real
broker: every event published to the events exchange is in it, in publish order; a stream that
exists with other retention is kept, not refused; `make migrate-queues` leaves it alone."""

from __future__ import annotations

import asyncio
import logging

import aio_pika
import pytest
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage
from pydantic import SecretStr

from devtools import rabbitmq
from service.bootstrap import _declare
from service.config import Settings
from service.migrate_queues import migrate
from service.topology import topology

READ_TIMEOUT = 10.0


async def publish_events(connection: AbstractConnection, keys: list[str]) -> None:
    channel = await connection.channel(publisher_confirms=True)
    events = await channel.get_exchange("orders.events")
    for number, key in enumerate(keys):
        await events.publish(aio_pika.Message(str(number).encode()), routing_key=key)
    await channel.close()


async def read_history(
    connection: AbstractConnection, count: int, offset: str | int = "first"
) -> list[AbstractIncomingMessage]:
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=50)
    stream = await channel.get_queue("orders.events.history", ensure=False)
    arrived: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
    await stream.consume(arrived.put, arguments={"x-stream-offset": offset})
    read: list[AbstractIncomingMessage] = []
    async with asyncio.timeout(READ_TIMEOUT):
        while len(read) < count:
            message = await arrived.get()
            await message.ack()
            read.append(message)
    await channel.close()
    return read


async def test_every_event_is_kept_in_publish_order(vhost_url: str) -> None:
    await _declare(vhost_url, topology(Settings()))
    rows = rabbitmq._listing("list_queues", "-p", vhost_url.rsplit("/", 1)[1], "name", "type")
    assert {row["name"]: row["type"] for row in rows}["orders.events.history"] == "stream"
    keys = ["order.placed", "order.status_changed", "order.metadata_updated", "anything.else"]
    async with await aio_pika.connect(vhost_url) as connection:
        await publish_events(connection, keys * 5)
        read = await read_history(connection, 20)
        assert [m.body for m in read] == [str(n).encode() for n in range(20)]
        assert [m.routing_key for m in read] == keys * 5
        offsets = [int((m.headers or {})["x-stream-offset"]) for m in read]  # type: ignore[arg-type]
        assert offsets == sorted(offsets)
        # From an offset: that event and the ones after it.
        later = await read_history(connection, 5, offset=offsets[15])
        assert [m.body for m in later] == [str(n).encode() for n in range(15, 20)]


async def test_a_stream_with_other_retention_is_kept_with_a_warning(
    vhost_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    await _declare(vhost_url, topology(Settings(history_max_age="1D")))
    async with await aio_pika.connect(vhost_url) as connection:
        await publish_events(connection, ["order.placed"])
        with caplog.at_level(logging.WARNING, logger="service"):
            await _declare(vhost_url, topology(Settings()))  # 7D now: no StaleQueues
        (warning,) = [r for r in caplog.records if "orders.events.history" in r.getMessage()]
        assert "x-max-age" in warning.getMessage()
        assert "policy" in warning.getMessage()
        await publish_events(connection, ["order.status_changed"])
        read = await read_history(connection, 2)
        assert [m.routing_key for m in read] == ["order.placed", "order.status_changed"]


async def test_migrate_queues_leaves_the_stream_alone(
    vhost_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(amqp_url=SecretStr(vhost_url))
    await _declare(vhost_url, topology(settings))
    async with await aio_pika.connect(vhost_url) as connection:
        await publish_events(connection, ["order.placed"])
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=10)
        reader = await channel.get_queue("orders.events.history", ensure=False)

        async def keep_reading(message: AbstractIncomingMessage) -> None:
            await message.ack()

        await reader.consume(keep_reading, arguments={"x-stream-offset": "first"})
        # A downstream reader of the history is no running worker.
        assert await migrate(settings) == 0
        out = capsys.readouterr().out
        assert "orders.events.history: a stream, left as it is" in out
        assert "nothing to do" in out
        assert len(await read_history(connection, 1)) == 1
