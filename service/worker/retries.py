"""The retry policy for a message whose handler failed unexpectedly, and the service's own
bookkeeping headers.

The attempt count is never read from a header: a producer can put any header on a message,
`x-death` included (RabbitMQ adds to an `x-death` it finds instead of replacing it). A delivery
is a retry only when it provably came back through the service's own delay queues: it then
arrives from the requeue exchange, which only the broker publishes to (dead-lettering a copy
the service itself sent to the retry exchange when its TTL ran out), with the routing key the
service chose, `r<n>_<ms>ms.<key>`, where n is how many attempts were made. Any other delivery
is a first attempt. The count is clamped to the configured delays, so every message is tried
at most `len(retry_delays_ms) + 1` times and then dead-lettered.

The service's bookkeeping headers (and, on a first attempt, the broker's dead-letter history,
which only a producer can have put there) are never read from a producer's message. The
copies the service publishes (a retry, a dead letter) carry them moved, unread, into one
table header, `x-ignored-headers`, so nothing a producer sent is lost and nothing it forged
reads as the service's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from service.amqp_decoding import BAD_PROPERTIES, DROPPED_HEADERS
from service.topology import retry_attempt

ATTEMPT_HEADER = "x-attempt"
"""On a copy in a delay queue: the attempt that failed (for people; never read back)."""
ATTEMPTS_HEADER = "x-attempts"
"""On a dead letter: how many times the message was tried."""
ERROR_CODE_HEADER = "x-error-code"
ERROR_MESSAGE_HEADER = "x-error-message"
LAST_ERROR_HEADER = "x-last-error"
"""The exception type of the last unexpected failure (retries and internal_error letters)."""
IGNORED_HEADER = "x-ignored-headers"
"""A table of the reserved headers a producer put on its message, as they were sent."""

SERVICE_HEADERS = frozenset(
    {
        ATTEMPT_HEADER,
        ATTEMPTS_HEADER,
        ERROR_CODE_HEADER,
        ERROR_MESSAGE_HEADER,
        LAST_ERROR_HEADER,
        IGNORED_HEADER,
        BAD_PROPERTIES,
        DROPPED_HEADERS,
    }
)
"""Set by the service only; the same names on an incoming message are ignored."""

DEATH_HEADERS = frozenset(
    {
        "x-death",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
    }
)
"""Set by RabbitMQ when it dead-letters a message; on a first attempt only a producer can
have put them there."""

DELIVERY_COUNT = "x-delivery-count"
"""Set by a quorum queue on a redelivery; left off every copy, which is a new message that
its next queue counts afresh."""

_FRESH = SERVICE_HEADERS - {IGNORED_HEADER}
"""What a retry round's copy carries that is set afresh on the next copy."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and after which delays a failing message is tried again."""

    requeue_exchange: str
    delays_ms: tuple[int, ...]

    @property
    def max_attempts(self) -> int:
        return len(self.delays_ms) + 1

    def is_retry(self, exchange: str | None) -> bool:
        """Whether the delivery came back from the service's own delay queues."""
        return exchange == self.requeue_exchange

    def attempts_made(self, exchange: str | None, routing_key: str | None) -> int:
        """How many attempts were made before this delivery: 0 for a first attempt, at most
        `len(delays_ms)`. A retry whose key names no attempt counts as the last one."""
        if not self.is_retry(exchange):
            return 0
        made = retry_attempt(routing_key or "")
        return len(self.delays_ms) if made is None else min(max(made, 0), len(self.delays_ms))

    def delay_after(self, attempt: int) -> int:
        """Milliseconds to wait after failed attempt `attempt` (1 <= attempt < max_attempts)."""
        return self.delays_ms[attempt - 1]


def carried_headers(headers: Mapping[str, Any] | None, *, retry: bool) -> dict[str, Any]:
    """The headers a retry or dead-letter copy of a delivery carries over.

    A first attempt's reserved headers (the service's, and the broker's dead-letter history)
    are a producer's: they move, as sent, into `x-ignored-headers` (a forged one included).
    A retry's headers were set by the service and the broker: its `x-ignored-headers` and
    `x-death` stay, the rest of the service's headers are set afresh on the copy.
    Header names are compared without case, so `X-Attempt` cannot pass for ours either.
    Values are made `encodable`, so no copy fails to publish on what it carries.
    """
    carried: dict[str, Any] = {}
    ignored: dict[str, Any] = {}
    for name, raw in (headers or {}).items():
        value = encodable(raw)
        folded = name.lower()
        if folded == DELIVERY_COUNT:
            continue
        if retry:
            if folded not in _FRESH:
                carried[name] = value
        elif folded in SERVICE_HEADERS or folded in DEATH_HEADERS:
            ignored[name] = value
        else:
            carried[name] = value
    if ignored:
        carried[IGNORED_HEADER] = ignored
    return carried


def encodable(value: Any) -> Any:
    """A decoded header value as the AMQP client can encode it again: a long string that is
    not UTF-8 arrives as `bytes`, which it refuses, so it goes back as a byte array, with the
    same bytes (also inside tables and arrays)."""
    if isinstance(value, bytes):
        return bytearray(value)
    if isinstance(value, dict):
        return {key: encodable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [encodable(item) for item in value]
    return value
