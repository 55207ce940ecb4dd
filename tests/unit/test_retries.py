"""The retry policy and the bookkeeping headers: nothing a producer sends sets the count."""

from __future__ import annotations

from typing import Any

import pytest

from service.failpoints import FAIL_HANDLER, Failpoints, InjectedFault
from service.worker.retries import IGNORED_HEADER, RetryPolicy, carried_headers, encodable

POLICY = RetryPolicy("orders.requeue", (1000, 5000, 15000))


@pytest.mark.parametrize(
    ("exchange", "routing_key", "made"),
    [
        ("orders", "orders.place", 0),  # a producer's message: a first attempt
        ("", "orders.place", 0),  # straight to the queue through the default exchange
        ("orders.requeue", "r1_1000ms.orders.place", 1),
        ("orders.requeue", "r3_15000ms.orders.action", 3),
        ("orders.requeue", "r9_1000ms.orders.place", 3),  # a left-over delay queue: clamped
        ("orders.requeue", "r0_1000ms.orders.place", 0),
        ("orders.requeue", "x.orders.place", 3),  # names no attempt: the last one
        ("orders.requeue", "r1234567890_1ms.orders.place", 3),  # too many digits to be ours
        ("orders", "r1_1000ms.orders.place", 0),  # a retry key alone proves nothing
        (None, None, 0),
    ],
)
def test_attempts_made_come_from_the_retry_round_only(
    exchange: str | None, routing_key: str | None, made: int
) -> None:
    assert POLICY.attempts_made(exchange, routing_key) == made
    assert 0 <= made < POLICY.max_attempts


def test_every_attempt_but_the_last_has_a_delay() -> None:
    assert POLICY.max_attempts == 4
    assert [POLICY.delay_after(n) for n in range(1, POLICY.max_attempts)] == [1000, 5000, 15000]
    assert RetryPolicy("orders.requeue", ()).max_attempts == 1


FORGED: dict[str, Any] = {
    "x-attempt": -5,
    "X-Attempts": 99,
    "x-error-code": b"not_found",
    "x-error-message": "forged",
    "x-last-error": "Forged",
    "x-death": [{"queue": "orders.retry.1.1000ms", "reason": "expired", "count": 99}],
    "x-first-death-queue": "orders.place",
    "x-ignored-headers": {"a": 1},
}


def test_a_first_attempt_moves_every_reserved_header_aside_as_sent() -> None:
    carried = carried_headers({**FORGED, "tenant": "acme", "x-trace": 7}, retry=False)
    assert carried == {"tenant": "acme", "x-trace": 7, IGNORED_HEADER: FORGED}


def test_a_retry_keeps_the_broker_history_and_what_was_moved_aside() -> None:
    ours = {
        "tenant": "acme",
        "x-attempt": 1,
        "x-last-error": "RuntimeError",
        "x-death": [{"queue": "orders.retry.1.1000ms", "reason": "expired", "count": 1}],
        IGNORED_HEADER: {"x-attempt": -5},
    }
    carried = carried_headers(ours, retry=True)
    assert carried == {
        "tenant": "acme",
        "x-death": ours["x-death"],
        IGNORED_HEADER: {"x-attempt": -5},
    }


def test_values_that_are_not_utf_8_are_carried_as_byte_arrays() -> None:
    headers = {"tenant": b"\xff", "x-attempt": [b"\xfe", {"deep": b"\xfd"}], "ok": "é"}
    carried = carried_headers(headers, retry=False)
    assert carried == {
        "tenant": bytearray(b"\xff"),
        "ok": "é",
        IGNORED_HEADER: {"x-attempt": [bytearray(b"\xfe"), {"deep": bytearray(b"\xfd")}]},
    }
    assert type(carried["tenant"]) is bytearray
    assert encodable(b"") == bytearray()


@pytest.mark.parametrize("retry", [False, True])
def test_the_quorum_queues_delivery_count_is_left_off_every_copy(retry: bool) -> None:
    headers = {"x-delivery-count": 3, "X-Delivery-Count": 1, "kept": "yes"}
    assert carried_headers(headers, retry=retry) == {"kept": "yes"}


def test_no_headers() -> None:
    assert carried_headers(None, retry=False) == {}
    assert carried_headers({}, retry=True) == {}


def test_the_fail_handler_failpoint_fails_marked_messages_as_often_as_asked() -> None:
    failpoints = Failpoints(frozenset({FAIL_HANDLER}))
    failpoints.fail_if_marked(b'{"notes": "nothing"}', "m0")
    for _ in range(2):
        with pytest.raises(InjectedFault):
            failpoints.fail_if_marked(b'{"notes": "failpoint:fail-handler:2"}', "m1")
    failpoints.fail_if_marked(b'{"notes": "failpoint:fail-handler:2"}', "m1")
    for _ in range(5):
        with pytest.raises(InjectedFault):
            failpoints.fail_if_marked(b'{"notes": "failpoint:fail-handler"}', "m2")
    Failpoints().fail_if_marked(b'{"notes": "failpoint:fail-handler"}', "m3")  # not enabled
