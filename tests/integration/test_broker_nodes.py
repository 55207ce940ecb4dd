"""A URL naming several RabbitMQ nodes, against the local broker and a port where nothing
listens: the worker's broker, the topology connection and the client reach the live node."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import pytest
from faststream.rabbit import RabbitQueue

from devtools.embedded_mongo import free_port
from orders_client import OrdersClient
from service.amqp_connection import connect_any, rabbit_broker


def dead_node_first(amqp_url: str) -> str:
    """`amqp_url` with a node that refuses connections put before the live one."""
    parts = urlsplit(amqp_url)
    userinfo, _, live = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{userinfo}@127.0.0.1:{free_port()},{live}"))


async def test_the_broker_skips_a_node_that_is_down(amqp_url: str) -> None:
    url = dead_node_first(amqp_url)
    broker = rabbit_broker(url, fail_fast=False, reconnect_interval=30)
    received: asyncio.Queue[str] = asyncio.Queue()

    @broker.subscriber(RabbitQueue("nodes.check", auto_delete=True))
    async def handle(body: str) -> None:
        await received.put(body)

    async with broker:
        # The second node at once: the 30 s wait comes only after a whole round failed.
        await asyncio.wait_for(broker.start(), 10)
        await broker.publish("via the live node", queue="nodes.check")
        assert await asyncio.wait_for(received.get(), 10) == "via the live node"


async def test_a_plain_connection_and_the_client_skip_a_node_that_is_down(amqp_url: str) -> None:
    url = dead_node_first(amqp_url)
    connection = await connect_any(url)
    async with connection:
        assert isinstance(connection, aio_pika.Connection)
        assert connection.url.port == urlsplit(amqp_url).port
    async with OrdersClient(url, timeout=10) as client:
        assert client.url == url


async def test_with_every_node_down_the_last_error_is_raised(amqp_url: str) -> None:
    parts = urlsplit(amqp_url)
    userinfo = parts.netloc.rpartition("@")[0]
    url = urlunsplit(
        parts._replace(netloc=f"{userinfo}@127.0.0.1:{free_port()},127.0.0.1:{free_port()}")
    )
    with pytest.raises(aio_pika.exceptions.AMQPConnectionError) as failed:
        await connect_any(url)
    assert "guest" not in str(failed.value)


async def test_fail_fast_tries_every_node_before_it_gives_up(amqp_url: str) -> None:
    # FastStream's (and aio-pika's) default: the first connection must succeed, on some node.
    broker = rabbit_broker(dead_node_first(amqp_url))
    async with broker:
        await asyncio.wait_for(broker.connect(), 10)

    parts = urlsplit(amqp_url)
    userinfo = parts.netloc.rpartition("@")[0]
    dead = [free_port(), free_port()]
    url = urlunsplit(parts._replace(netloc=f"{userinfo}@127.0.0.1:{dead[0]},127.0.0.1:{dead[1]}"))
    broker = rabbit_broker(url, reconnect_interval=30)
    with pytest.raises(aio_pika.exceptions.AMQPConnectionError) as failed:
        await asyncio.wait_for(broker.connect(), 10)
    assert f"127.0.0.1:{dead[0]}, 127.0.0.1:{dead[1]}" in str(failed.value)
    assert "guest" not in str(failed.value)
