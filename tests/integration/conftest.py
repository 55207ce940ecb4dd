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
from service.store.feed import ChangeFeed
from service.store.orders import OrderStore
from service.store.outbox import EVENTS_FEED, FEED_PIPELINE, EventRelay, open_events_feed
from service.store.queries import OrderQueries
from service.store.stats import OrderStats
from tests.integration.builders import CURSORS


@dataclass
class RecordingPublisher:
    """A stand-in broker that keeps what it was asked to publish, and can be made to fail."""

    published: list[PendingEvent] = field(default_factory=list)
    failing: bool = False
    refused: int = 0

    async def publish_event(self, event: PendingEvent) -> None:
        if self.failing:
            self.refused += 1
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


@dataclass
class Events:
    """The events feed of a test's database, publishing into `publisher`."""

    db: AsyncDatabase[Document]
    publisher: RecordingPublisher

    async def published(self) -> list[PendingEvent]:
        """Publish what was written since the last call, as the feed's reader does (under
        its lease, to the end of the stream), and return everything published so far."""
        feed = ChangeFeed(
            self.db,
            EVENTS_FEED,
            EventRelay(self.publisher),
            owner="tests",
            pipeline=FEED_PIPELINE,
            transactional=False,
        )
        token = await feed.take()
        assert token is not None
        try:
            await feed.catch_up(token)
        finally:
            await feed.release(token)
        return self.publisher.published


@pytest.fixture
async def events(db: AsyncDatabase[Document], publisher: RecordingPublisher) -> Events:
    """The events feed, opened before the test writes."""
    await open_events_feed(db)
    return Events(db, publisher)


def order_service(db: AsyncDatabase[Document]) -> OrderService:
    """The use cases over the store of `db`."""
    return OrderService(
        OrderStore(db), OrderQueries(db, cursors=CURSORS), OrderStats(db), default_currency="EUR"
    )


@pytest.fixture
def orders(db: AsyncDatabase[Document], events: Events) -> OrderService:
    """The use cases over the test's database, its events feed open."""
    return order_service(db)


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
