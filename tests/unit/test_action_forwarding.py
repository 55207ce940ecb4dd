"""The action router's forwarding to a partition queue (service/worker/partitions.py): a
copy the broker refuses is published again while the action is held, not handed back."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import aio_pika
import pytest
from pamqp.commands import Basic

from service.config import Settings
from service.topology import topology
from service.worker import partitions
from service.worker.partitions import ActionRouter


class RefusingExchange:
    """Nacks the first `refusals` publishes, then confirms; remembers the routing keys."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.published: list[str] = []

    async def publish(self, message: aio_pika.Message, routing_key: str) -> None:
        self.published.append(routing_key)
        if len(self.published) <= self.refusals:
            raise aio_pika.exceptions.DeliveryError(None, Basic.Nack())


def router(retry_seconds: float) -> ActionRouter:
    return ActionRouter(
        topology(Settings()),
        cast(Any, None),
        cast(Any, None),
        lambda: None,
        max_message_bytes=1 << 20,
        transient_retry_seconds=retry_seconds,
    )


ACTION = cast(
    Any,
    SimpleNamespace(
        body=b"{}",
        headers={},
        content_type="application/json",
        content_encoding=None,
        priority=None,
        correlation_id="c",
        reply_to=None,
        expiration=None,
        message_id="m",
        timestamp=None,
        type=None,
        app_id=None,
    ),
)


@pytest.fixture(autouse=True)
def short_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(partitions, "FORWARD_RETRY_FIRST_PAUSE", 0.01)
    monkeypatch.setattr(partitions, "FORWARD_RETRY_MAX_PAUSE", 0.02)


async def test_a_refused_copy_is_published_again_until_it_is_confirmed() -> None:
    exchange = RefusingExchange(refusals=3)
    first = exchange.publish(aio_pika.Message(b"{}"), "5")
    await router(retry_seconds=5)._confirmed(first, cast(Any, exchange), ACTION, "5")
    assert exchange.published == ["5"] * 4


async def test_a_copy_refused_for_longer_than_the_retry_time_fails() -> None:
    exchange = RefusingExchange(refusals=1000)
    first = exchange.publish(aio_pika.Message(b"{}"), "5")
    with pytest.raises(aio_pika.exceptions.DeliveryError):
        await router(retry_seconds=0.1)._confirmed(first, cast(Any, exchange), ACTION, "5")
    assert 2 <= len(exchange.published) < 20
