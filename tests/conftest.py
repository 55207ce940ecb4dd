"""Session fixtures: an embedded MongoDB replica set and a private RabbitMQ vhost; a mongod of
a test's own (``private_mongo``) for the tests that stop it. Tests marked ``restarts_broker``
run after all the others.

Nothing here imports ``service``: the e2e tests must stay black-box.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest

from devtools import rabbitmq
from devtools.embedded_mongo import EmbeddedMongo, free_port, start_mongod

RESTARTS_BROKER = "restarts_broker"
"""The marker of tests that restart the shared RabbitMQ (it drops every connection)."""


def broker_restarts_last(items: Sequence[pytest.Item]) -> list[pytest.Item]:
    """The tests in their collected order, those marked `restarts_broker` moved to the end
    (in their own order), so that no other test loses its connections to the restart."""
    others: list[pytest.Item] = []
    marked: list[pytest.Item] = []
    for item in items:
        (others if item.get_closest_marker(RESTARTS_BROKER) is None else marked).append(item)
    return others + marked


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items[:] = broker_restarts_last(items)


@pytest.fixture(scope="session")
def mongo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedMongo]:
    """A mongod child process, primary of replica set ``rs0``, on a free port."""
    server = start_mongod(tmp_path_factory.mktemp("mongo"), free_port())
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mongo_url(mongo: EmbeddedMongo) -> str:
    """``mongodb://127.0.0.1:PORT/?replicaSet=rs0`` of the session's mongod."""
    return mongo.url


@pytest.fixture
def private_mongo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedMongo]:
    """A mongod of this test's own, so that stopping it disturbs nobody else."""
    server = start_mongod(tmp_path_factory.mktemp("private-mongo"), free_port())
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    """AMQP URL of a fresh vhost on the local RabbitMQ, deleted after the session."""
    with rabbitmq.scratch_vhost("orders-test") as url:
        yield url
