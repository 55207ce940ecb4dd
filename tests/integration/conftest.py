"""The store and the use cases against the session's real mongod; a fresh database per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import pytest
from aio_pika.abc import AbstractRobustConnection
from faststream.rabbit import RabbitBroker
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from devtools import rabbitmq
from service.application.usecases import OrderService
from service.domain.records import PendingEvent
from service.store.client import Document, connect, database, ensure_indexes
from service.store.orders import OrderStore
from service.store.outbox import OutboxRelay
from service.store.queries import OrderQueries
from service.store.stats import OrderStats
from tests.integration.builders import CURSORS


@dataclass
class RecordingPublisher:
    """A stand-in broker that keeps what it was asked to publish, and can be made to fail."""

    published: list[PendingEvent] = field(default_factory=list)
    failing: bool = False

    async def publish_event(self, event: PendingEvent) -> None:
        if self.failing:
            raise ConnectionError("broker unavailable")
        self.published.append(event)


@pytest.fixture(scope="session")
async def client(mongo_url: str) -> AsyncIterator[AsyncMongoClient[Document]]:
    mongo = connect(mongo_url)
    yield mongo
    await mongo.close()


@pytest.fixture
async def db(client: AsyncMongoClient[Document]) -> AsyncIterator[AsyncDatabase[Document]]:
    name = f"it_{uuid.uuid4().hex[:12]}"
    db = database(client, name)
    await ensure_indexes(db)
    yield db
    await client.drop_database(name)


@pytest.fixture
def publisher() -> RecordingPublisher:
    return RecordingPublisher()


@pytest.fixture
def relay(db: AsyncDatabase[Document], publisher: RecordingPublisher) -> OutboxRelay:
    return OutboxRelay(db, publisher, sweep_seconds=0.05, grace_seconds=0)


def order_service(db: AsyncDatabase[Document], relay: OutboxRelay) -> OrderService:
    """The use cases over the store of `db`, their events through `relay`."""
    return OrderService(
        OrderStore(db),
        OrderQueries(db, cursors=CURSORS),
        OrderStats(db),
        relay,
        default_currency="EUR",
    )


@pytest.fixture
def orders(db: AsyncDatabase[Document], relay: OutboxRelay) -> OrderService:
    return order_service(db, relay)


@pytest.fixture
async def connection(amqp_url: str) -> AsyncIterator[AbstractRobustConnection]:
    """The robust connection of a started FastStream broker on the session's vhost, as the
    worker's own consumers and channels get it."""
    broker = RabbitBroker(amqp_url)
    async with broker:
        await broker.start()
        assert broker._connection is not None
        yield broker._connection


@pytest.fixture
def vhost_url() -> Iterator[str]:
    """AMQP URL of a vhost of this test's own on the local RabbitMQ (its queues may be
    declared with any arguments), deleted afterwards."""
    with rabbitmq.scratch_vhost("orders-it") as url:
        yield url
