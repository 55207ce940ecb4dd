"""A RabbitMQ URL naming several nodes: parsing, the settings check, and the connection that
moves to the next node (orders_vocabulary/broker_url.py, service/amqp_connection.py)."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import SecretStr, ValidationError
from yarl import URL

from orders_client import OrdersClient
from orders_vocabulary.broker_url import BrokerUrlError, hosts, node_urls
from service.amqp_connection import NodeRotatingConnection, rabbit_broker
from service.config import Settings

SECRET = "s3cr3t-pw"
CLUSTER = f"amqp://orders:{SECRET}@rabbit-1:5672,rabbit-2:5673,rabbit-3/orders?heartbeat=30"


def test_a_one_host_url_is_itself() -> None:
    url = "amqp://guest:guest@127.0.0.1:5672/"
    assert node_urls(url) == [url]


def test_each_node_keeps_the_account_the_vhost_and_the_options() -> None:
    assert node_urls(CLUSTER) == [
        f"amqp://orders:{SECRET}@rabbit-1:5672/orders?heartbeat=30",
        f"amqp://orders:{SECRET}@rabbit-2:5673/orders?heartbeat=30",
        f"amqp://orders:{SECRET}@rabbit-3/orders?heartbeat=30",
    ]
    assert hosts(CLUSTER) == ["rabbit-1:5672", "rabbit-2:5673", "rabbit-3"]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("amqp://h1,h2", ["amqp://h1", "amqp://h2"]),
        ("amqps://u:p@h1:5671,h2:5671?cafile=ca.pem", ["amqps://u:p@h1:5671?cafile=ca.pem",
                                                      "amqps://u:p@h2:5671?cafile=ca.pem"]),
        ("amqp://u:p@[::1]:5682,[::1]:5683/%2F", ["amqp://u:p@[::1]:5682/%2F",
                                                  "amqp://u:p@[::1]:5683/%2F"]),
        ("amqp://u:p%40x@h1,h2/", ["amqp://u:p%40x@h1/", "amqp://u:p%40x@h2/"]),
    ],
)  # fmt: skip
def test_host_lists_in_every_form(url: str, expected: list[str]) -> None:
    assert node_urls(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        f"http://orders:{SECRET}@h1/",
        f"orders:{SECRET}@h1,h2/",
        f"amqp://orders:{SECRET}@h1,,h2/",
        f"amqp://orders:{SECRET}@h1,/",
        f"amqp://orders:{SECRET}@h1:notaport,h2/",
        f"amqp://orders:{SECRET}@h1:99999/",
        f"amqp://orders:{SECRET}@:5672/",
    ],
)
def test_a_malformed_url_is_refused_without_its_credentials(url: str) -> None:
    with pytest.raises(BrokerUrlError) as refused:
        node_urls(url)
    assert SECRET not in str(refused.value)
    with pytest.raises(ValidationError) as invalid:
        Settings(amqp_url=SecretStr(url))
    assert SECRET not in str(invalid.value)
    assert "amqp_url" in str(invalid.value)


def test_the_settings_and_the_client_accept_a_cluster_url() -> None:
    assert Settings(amqp_url=SecretStr(CLUSTER)).amqp_url.get_secret_value() == CLUSTER
    assert OrdersClient(CLUSTER).url == CLUSTER
    with pytest.raises(BrokerUrlError):
        OrdersClient("amqp://h1,,h2/")


def test_the_broker_connects_through_the_rotating_connection() -> None:
    broker = rabbit_broker(CLUSTER, fail_fast=False)
    # FastStream hands these to aio_pika.connect_robust: an upgrade that renames them fails here.
    kwargs = broker._connection_kwargs
    assert URL(kwargs["url"]).host == "rabbit-1"
    factory = kwargs["connection_class"]
    assert factory.func is NodeRotatingConnection
    assert factory.keywords == {"nodes": node_urls(CLUSTER)}
    assert "s3cr3t" not in str(broker.specification.url)


async def _fail(connection: NodeRotatingConnection) -> None:
    closing: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    closing.set_exception(ConnectionRefusedError("refused"))
    await connection._on_connection_close(closing)


async def test_each_failure_moves_to_the_next_node_and_a_round_ends_with_the_wait() -> None:
    nodes = node_urls(CLUSTER)
    connection = NodeRotatingConnection(URL(nodes[0]), nodes=nodes, reconnect_interval=7)
    seen = [connection.node]
    waits = []
    for _ in range(4):
        await _fail(connection)
        seen.append(connection.node)
        waits.append(connection.reconnect_interval)
    assert seen == [
        "rabbit-1:5672", "rabbit-2:5673", "rabbit-3", "rabbit-1:5672", "rabbit-2:5673",
    ]  # fmt: skip
    # The next node at once; the wait only once all three failed in a row.
    assert waits == [0.0, 0.0, 7, 0.0]
    assert connection.url.query["heartbeat"] == "30"
    assert connection.url.password == SECRET
    assert SECRET not in str(connection)


async def test_one_node_waits_after_every_failure() -> None:
    url = "amqp://guest:guest@127.0.0.1:5672/"
    connection = NodeRotatingConnection(URL(url), nodes=[url], reconnect_interval=3)
    await _fail(connection)
    assert (connection.node, connection.reconnect_interval) == ("127.0.0.1:5672", 3)
