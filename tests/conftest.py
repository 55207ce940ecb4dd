"""Session fixtures: an embedded MongoDB replica set and a private RabbitMQ vhost; a mongod of
a test's own (``private_mongo``) for the tests that stop it.

Nothing here imports ``service``: the e2e tests must stay black-box.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from devtools import rabbitmq
from devtools.embedded_mongo import EmbeddedMongo, free_port, start_mongod


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
    rabbitmq.ensure_running()
    vhost = f"orders-test-{uuid.uuid4().hex[:8]}"
    rabbitmq.create_vhost(vhost)
    try:
        yield (
            f"amqp://guest:guest@{rabbitmq.DEFAULT_HOST}:{rabbitmq.DEFAULT_PORT}/"
            f"{quote(vhost, safe='')}"
        )
    finally:
        rabbitmq.delete_vhost(vhost)
