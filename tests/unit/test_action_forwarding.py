"""The action router's forwarding to a partition queue (service/worker/partitions.py): a
copy the broker refuses is published again while the action is held, not handed back; the
copies of one partition are published one after another, in admission order; a copy whose
delivery channel closed is not published (its redelivered self is); an order named by its
number is looked up once for the router and the sequencer."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import aio_pika
import pytest
from pamqp.commands import Basic

from service.config import Settings
from service.topology import topology
from service.worker import partitions
from service.worker.partitions import ActionRouter
from service.worker.sequencing import OrderedRunner
from tests.unit.fakes import DeliveryChannel, incoming


class Channel:
    """The router's channel (always ready) and a delivery's channel (open or closed)."""

    def __init__(self, closed: bool = False) -> None:
        self.is_closed = closed

    async def ready(self) -> None:
        return None


class RefusingExchange:
    """Nacks the first `refusals` publishes, then confirms; records what it published."""

    def __init__(self, refusals: int = 0, delay: float = 0.0) -> None:
        self.refusals = refusals
        self.delay = delay
        self.published: list[tuple[str, str]] = []

    async def publish(self, message: aio_pika.Message, routing_key: str) -> None:
        await asyncio.sleep(self.delay)
        self.published.append((routing_key, str(message.message_id)))
        if len(self.published) <= self.refusals:
            raise aio_pika.exceptions.DeliveryError(None, Basic.Nack())


def router(**options: Any) -> ActionRouter:
    return ActionRouter(
        topology(Settings()),
        cast(Any, None),
        cast(Any, None),
        lambda: None,
        max_message_bytes=1 << 20,
        transient_retry_seconds=1,
        **options,
    )


def action(message_id: str, channel: Channel) -> Any:
    return incoming(message_id, channel)


@pytest.fixture(autouse=True)
def short_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(partitions, "FORWARD_RETRY_FIRST_PAUSE", 0.01)
    monkeypatch.setattr(partitions, "FORWARD_RETRY_MAX_PAUSE", 0.02)


async def test_a_refused_copy_is_published_again_until_it_is_confirmed() -> None:
    exchange = RefusingExchange(refusals=3)
    forwarded = await router()._forward(
        action("m", Channel()), cast(Any, Channel()), cast(Any, exchange), 5
    )
    assert forwarded
    assert exchange.published == [("5", "m")] * 4


async def test_a_copy_whose_delivery_channel_closed_is_not_published() -> None:
    exchange = RefusingExchange()
    forwarded = await router()._forward(
        action("m", Channel(closed=True)), cast(Any, Channel()), cast(Any, exchange), 5
    )
    assert not forwarded
    assert exchange.published == []


async def test_one_partitions_copies_go_out_in_admission_order_even_when_refused() -> None:
    """The first copy is refused twice; the second, admitted after it, waits for it."""
    exchange = RefusingExchange(refusals=2, delay=0.005)
    forwarding = router()
    delivered_on = DeliveryChannel()  # one channel: delivery tags 1, 2, 3, 4

    def delivery(tag: int) -> Any:
        return incoming(str(tag), delivered_on, delivery_tag=tag, body=b'{"id": 8}')  # partition 0

    async def opened() -> tuple[Any, Any]:
        return Channel(), exchange

    forwarding._forwarding.open = opened  # type: ignore[method-assign]
    deliveries = [delivery(tag) for tag in range(1, 5)]
    await asyncio.gather(*(forwarding.route(raw) for raw in reversed(deliveries)))

    confirmed = [message_id for _, message_id in exchange.published[2:]]
    assert [message_id for _, message_id in exchange.published[:2]] == ["1", "1"]
    assert confirmed == ["1", "2", "3", "4"]
    assert delivered_on.acked == ["1", "2", "3", "4"]


def test_a_copy_carries_headers_pamqp_decoded_but_cannot_encode_again() -> None:
    """A double beyond a float's range, nested in an array of tables (pamqp decodes it from
    a producer's header table, and raises OverflowError writing it back as a float)."""
    from pamqp.header import ContentHeader

    raw = action("m", Channel())
    raw.headers = {"h": [{"big": 1e300}], "plain": "kept"}

    copy = partitions._copy(raw)

    header = ContentHeader(properties=copy.properties, body_size=len(copy.body))
    assert header.marshal()
    assert copy.headers["plain"] == "kept"


async def test_an_order_number_is_looked_up_once_for_the_router_and_the_sequencer() -> None:
    """The router names the partition and the sequencer the order's line: one lookup."""
    asked: list[int] = []

    async def lookup(order_id: int) -> int | None:
        asked.append(order_id)
        return 7 if order_id == 1007 else None

    runner = OrderedRunner()
    runner.numbers.lookup = lookup
    routing = router(numbers=runner.numbers)
    action = incoming("a", None, body=b'{"order_id": 1007}')

    assert await routing._order_key(action) == 7
    assert await runner._key({"order_id": 1007}) == 7
    assert await runner._key({"order_id": 55}) == ("order_id", 55)  # none: not remembered
    assert await routing._order_key(incoming("b", None, body=b'{"order_id": 55}')) == (
        "order_id",
        55,
    )
    assert asked == [1007, 55, 55]
