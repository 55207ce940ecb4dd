"""A URL naming several RabbitMQ nodes, against the local broker and ports where nothing
listens: the worker's broker, the topology connection and the client reach the live node."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import aio_pika
import pytest
from faststream.rabbit import RabbitQueue

from orders_client import OrdersClient
from orders_vocabulary.broker_url import hosts
from service.amqp_connection import connect_any, rabbit_broker
from tests.broker_urls import all_nodes_down, with_nodes_down


async def test_the_broker_skips_a_node_that_is_down(amqp_url: str) -> None:
    broker = rabbit_broker(with_nodes_down(amqp_url), fail_fast=False, reconnect_interval=30)
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
    url = with_nodes_down(amqp_url)
    connection = await connect_any(url)
    async with connection:
        assert isinstance(connection, aio_pika.Connection)
        assert connection.url.port == urlsplit(amqp_url).port
    async with OrdersClient(url, timeout=10) as client:
        assert client.url == url


async def test_with_every_node_down_the_last_error_is_raised(amqp_url: str) -> None:
    with pytest.raises(aio_pika.exceptions.AMQPConnectionError) as failed:
        await connect_any(all_nodes_down(amqp_url))
    assert "guest" not in str(failed.value)


async def test_fail_fast_tries_every_node_before_it_gives_up(amqp_url: str) -> None:
    # FastStream's (and aio-pika's) default: the first connection must succeed, on some node.
    broker = rabbit_broker(with_nodes_down(amqp_url, before=2))
    async with broker:
        await asyncio.wait_for(broker.connect(), 10)

    url = all_nodes_down(amqp_url, count=3)
    broker = rabbit_broker(url, reconnect_interval=30)
    with pytest.raises(aio_pika.exceptions.AMQPConnectionError) as failed:
        await asyncio.wait_for(broker.connect(), 10)
    assert ", ".join(hosts(url)) in str(failed.value)
    assert "guest" not in str(failed.value)
