"""Retries of a message whose handler fails unexpectedly (the ``fail-handler`` failpoint):
a producer's bookkeeping headers change nothing, and an action is retried in its order's turn.

The worker of this module fails on every message whose body contains
``failpoint:fail-handler`` (``:N``: its first N attempts) and waits 300 ms, then 600 ms, before
the 2nd and 3rd attempts; after the 3rd it dead-letters the message as ``internal_error``.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pamqp.encode
import pytest

from .amqp_client import AmqpClient, DeadLetter, DeadLetterReader, EventCollector
from .contract import get_order, list_orders, new_customer_id, place, simple_order
from .waiting import eventually
from .worker import Worker

DELAYS_MS = (300, 600)
ATTEMPTS = len(DELAYS_MS) + 1
ALWAYS = "failpoint:fail-handler"


def failing(times: int | None = None) -> str:
    """A note that makes the handler fail on every attempt, or on the first `times`."""
    return ALWAYS if times is None else f"{ALWAYS}:{times}"


WORKER_ENV = {
    "ORDERS_FAILPOINTS": '["fail-handler"]',
    "ORDERS_RETRY_DELAYS_MS": f"[{DELAYS_MS[0]}, {DELAYS_MS[1]}]",
}
"""The worker of this module fails marked messages, and waits short delays between tries."""


def failures(worker: Worker, message_id: str, routing_key: str) -> int:
    """How often the worker logged a handler failure of this message."""
    failure = f"handler failed on {routing_key} (attempt"
    lines = worker.log_path.read_text(errors="replace").splitlines()
    return sum(1 for line in lines if failure in line and f"message_id={message_id}" in line)


async def assert_no_more_attempts(worker: Worker, message_id: str, routing_key: str) -> None:
    """Still `ATTEMPTS` failures after longer than the whole retry round took: no loop.

    A bound on time is the only way to see that nothing more happens."""
    await asyncio.sleep(sum(DELAYS_MS) / 1000 * 2)
    assert failures(worker, message_id, routing_key) == ATTEMPTS


def text(value: Any) -> Any:
    """Header values as aio-pika gives them: long strings as bytes, also inside tables."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, dict):
        return {key: text(item) for key, item in value.items()}
    if isinstance(value, list):
        return [text(item) for item in value]
    return value


FORGED_DEATH = [
    {
        "queue": "orders.retry.2.600ms",
        "reason": "expired",
        "count": 99,
        "exchange": "orders.retry",
        "routing-keys": ["r2_600ms.orders.place"],
    }
]

FORGERIES: dict[str, dict[str, Any]] = {
    "x-attempt=-1": {"x-attempt": -1},
    "x-attempt=-5": {"x-attempt": -5},
    "x-attempt=huge": {"x-attempt": 2**62},
    "x-attempt=string": {"x-attempt": "2"},
    "x-attempt=float": {"x-attempt": 1.5},
    "x-death": {"x-death": FORGED_DEATH, "x-first-death-queue": "orders.retry.2.600ms"},
    "every-service-header": {
        "x-attempt": 7,
        "X-Attempt": 7,
        "x-attempts": 99,
        "x-error-code": "not_found",
        "x-error-message": "forged",
        "x-last-error": "Forged",
        "x-ignored-headers": {"x-attempt": 1},
    },
}


def assert_true_bookkeeping(letter: DeadLetter, forged: dict[str, Any], routing_key: str) -> None:
    """The dead letter carries the service's values; the forged ones only, as sent, under
    `x-ignored-headers`."""
    headers = letter.headers
    assert letter.routing_key == routing_key
    assert headers["x-error-code"] == "internal_error"
    assert headers["x-attempts"] == ATTEMPTS
    assert headers["x-last-error"] == "InjectedFault"
    assert "Traceback" not in headers["x-error-message"]
    assert "x-attempt" not in headers
    assert "X-Attempt" not in headers
    assert text(headers["x-ignored-headers"]) == forged
    assert headers["tenant"] == "acme"  # the producer's own headers are kept
    # The broker's history of the retry round, untouched by the forged one: one pass through
    # each delay queue.
    deaths = text(headers["x-death"])
    assert sorted((d["queue"], d["count"]) for d in deaths) == [
        (f"orders.retry.{n}.{delay}ms", 1) for n, delay in enumerate(DELAYS_MS, start=1)
    ]


@pytest.mark.parametrize("forged", FORGERIES.values(), ids=FORGERIES.keys())
async def test_a_forged_attempt_count_cannot_shorten_or_stretch_the_retries_of_a_place(
    client: AmqpClient,
    worker: Worker,
    dead_letters: DeadLetterReader,
    events: EventCollector,
    forged: dict[str, Any],
) -> None:
    """Always failing: tried exactly 3 times, then dead-lettered with the true count."""
    customer = new_customer_id()
    message_id = await client.publish(
        "orders.place",
        simple_order(customer, notes=failing()),
        headers={**forged, "tenant": "acme"},
    )
    letter = await dead_letters.wait_for(lambda m: m.message_id == message_id, timeout=60)
    assert_true_bookkeeping(letter, forged, "orders.place")
    rejected = await events.wait_for(
        lambda e: (
            e.routing_key == "order.command_rejected"
            and e.body["payload"].get("customer_id") == customer
        ),
        timeout=30,
    )
    assert rejected.body["error"]["code"] == "internal_error"
    await assert_no_more_attempts(worker, message_id, "orders.place")
    await dead_letters.drain()
    assert [m for m in dead_letters.letters if m.message_id == message_id] == [letter]
    assert (await list_orders(client, customer_id=customer))["pagination"]["total"] == 0


@pytest.mark.parametrize(
    "forged",
    [FORGERIES["x-attempt=-1"], FORGERIES["x-attempt=huge"], FORGERIES["x-death"]],
    ids=["x-attempt=-1", "x-attempt=huge", "x-death"],
)
async def test_a_place_that_fails_twice_is_placed_on_its_third_attempt_whatever_it_claims(
    client: AmqpClient, worker: Worker, dead_letters: DeadLetterReader, forged: dict[str, Any]
) -> None:
    """Before, `x-attempt: -1` lost the message and a huge one dead-lettered it at once."""
    customer = new_customer_id()
    correlation_id = uuid.uuid4().hex
    reply = await client.request(
        "orders.place",
        simple_order(customer, notes=failing(times=2)),
        headers=forged,
        correlation_id=correlation_id,
        timeout=30,
    )
    assert reply["success"] is True, reply
    assert reply["data"]["customer_id"] == customer
    assert (await list_orders(client, customer_id=customer))["pagination"]["total"] == 1
    await dead_letters.drain()
    assert not [m for m in dead_letters.letters if m.correlation_id == correlation_id]


async def test_a_forged_action_is_retried_in_place_a_bounded_number_of_times(
    client: AmqpClient, worker: Worker, dead_letters: DeadLetterReader
) -> None:
    """`x-attempt: -5` used to start an endless nack/requeue loop on an action."""
    order = await place(client, simple_order(new_customer_id()))
    forged = {**FORGERIES["x-attempt=-5"], **FORGERIES["x-death"]}
    message_id = await client.publish(
        "orders.action",
        {"id": order["id"], "action": "cancel", "notes": failing()},
        headers={**forged, "tenant": "acme"},
    )
    letter = await dead_letters.wait_for(lambda m: m.message_id == message_id, timeout=60)
    headers = letter.headers
    assert letter.routing_key == "orders.action"
    assert headers["x-error-code"] == "internal_error"
    assert headers["x-attempts"] == ATTEMPTS
    assert headers["x-last-error"] == "InjectedFault"
    assert "x-attempt" not in headers
    assert "x-death" not in headers  # retried in place: it never went round a delay queue
    assert text(headers["x-ignored-headers"]) == forged
    await assert_no_more_attempts(worker, message_id, "orders.action")
    assert (await get_order(client, order["id"]))["status"] == "pending"


async def test_an_action_retried_in_place_keeps_its_orders_turn(
    client: AmqpClient, worker: Worker, events: EventCollector, dead_letters: DeadLetterReader
) -> None:
    """A fails once; B, published after it on the same order, waits for A's second attempt.

    Before, A went round a delay queue and B (pending -> confirmed) was applied first."""
    customer = new_customer_id()
    order = await place(client, simple_order(customer))
    first = await client.publish(
        "orders.action",
        {"id": order["id"], "action": "update_status", "status": "processing", "notes": failing(1)},
    )
    await client.publish(  # the same order, named by its order number
        "orders.action",
        {"order_id": order["order_id"], "action": "update_status", "status": "confirmed"},
    )
    changes = await events.wait_for_all(
        lambda e: e.routing_key == "order.status_changed" and e.body["id"] == order["id"],
        2,
        timeout=30,
    )
    in_order = sorted(changes, key=lambda e: e.body["version"])
    assert [(e.body["to_status"], e.body["version"]) for e in in_order] == [
        ("processing", 2),
        ("confirmed", 3),
    ]
    assert failures(worker, first, "orders.action") == 1
    await dead_letters.drain()
    assert not [m for m in dead_letters.letters if m.message_id == first]


async def test_an_action_that_keeps_failing_holds_its_order_not_the_others(
    client: AmqpClient, worker: Worker, dead_letters: DeadLetterReader
) -> None:
    """A always fails: B on the same order runs only once A's attempts are over (A is then
    dead-lettered); C, on another order and published after B, does not wait for A."""
    held, free = [await place(client, simple_order(new_customer_id())) for _ in range(2)]
    started = datetime.now(UTC)
    stuck = await client.publish(
        "orders.action", {"id": held["id"], "action": "complete", "notes": failing()}
    )
    await client.publish(
        "orders.action", {"id": held["id"], "action": "update_status", "status": "confirmed"}
    )
    await client.publish(
        "orders.action", {"id": free["id"], "action": "update_status", "status": "on_hold"}
    )

    async def both_applied() -> bool:
        orders = [await get_order(client, order["id"]) for order in (held, free)]
        return [order["status"] for order in orders] == ["confirmed", "on_hold"]

    await eventually(both_applied, timeout=30, what="both later actions applied")
    letter = await dead_letters.wait_for(lambda m: m.message_id == stuck, timeout=30)
    assert letter.headers["x-attempts"] == ATTEMPTS
    applied = {
        name: datetime.fromisoformat((await get_order(client, order["id"]))["updated_at"])
        for name, order in (("held", held), ("free", free))
    }
    retry_round = timedelta(milliseconds=sum(DELAYS_MS))
    assert applied["held"] - started >= retry_round  # B waited for A's attempts
    assert applied["free"] < applied["held"]  # C went ahead of B: only A's order was held
    assert failures(worker, stuck, "orders.action") == ATTEMPTS


@contextlib.contextmanager
def raw_long_strings() -> Iterator[None]:
    """Encode `bytes` header values as AMQP long strings, bytes as they are (as pika does), so
    this client can send a long string that is not UTF-8; aio-pika alone cannot."""
    encode_value = pamqp.encode.encode_table_value

    def encode(value: Any) -> bytes:
        if isinstance(value, bytes):
            return b"S" + len(value).to_bytes(4, "big") + value
        return encode_value(value)

    pamqp.encode.encode_table_value = encode
    try:
        yield
    finally:
        pamqp.encode.encode_table_value = encode_value


async def test_header_values_that_are_not_utf_8_survive_the_retries_and_the_dead_letter(
    client: AmqpClient, worker: Worker, dead_letters: DeadLetterReader
) -> None:
    """The broker passes them; decoded they are bytes, which the client refuses to encode
    again, so each copy the worker published failed and the message was requeued forever."""
    with raw_long_strings():
        message_id = await client.publish(
            "orders.place",
            simple_order(new_customer_id(), notes=failing()),
            headers={"tenant": b"\xff\xfeacme", "x-attempt": b"\xff", "nested": [b"\xfd"]},
        )
    letter = await dead_letters.wait_for(lambda m: m.message_id == message_id, timeout=60)
    assert letter.headers["x-error-code"] == "internal_error"
    assert letter.headers["x-attempts"] == ATTEMPTS
    assert letter.headers["tenant"] == b"\xff\xfeacme"  # the same bytes, as a byte array
    assert letter.headers["nested"] == [b"\xfd"]
    assert letter.headers["x-ignored-headers"] == {"x-attempt": b"\xff"}
    await assert_no_more_attempts(worker, message_id, "orders.place")
