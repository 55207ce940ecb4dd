"""What makes a request idempotent: its key, and the fingerprint of what it asks for.

A request is known by the caller's key (`idempotency_key` of a place, `request_id` of an
action), else by the message id of its delivery. The two are separate namespaces: a
`RequestKey` says which one it is in, so no string a caller sends can name a message id.

The fingerprint is a hash of the request in a canonical form, without the key itself
(service/application/idempotency.py takes it): a repeat of the key with the same
fingerprint is a replay, with another one an `IdempotencyConflict`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from service.domain.errors import IdempotencyConflict

LEGACY_MESSAGE_PREFIX = "amqp-message-id:"
"""How keys derived from a message id were written before the namespaces were separate."""


@dataclass(frozen=True)
class RequestKey:
    """The caller's key (`from_message` False) or a delivery's message id (True)."""

    value: str
    from_message: bool = False

    @classmethod
    def legacy(cls, stored: str) -> RequestKey:
        """A key stored as one string before the namespaces were separate: the service
        wrote message ids with a prefix, anything else was the caller's."""
        if stored.startswith(LEGACY_MESSAGE_PREFIX):
            return cls(stored.removeprefix(LEGACY_MESSAGE_PREFIX), from_message=True)
        return cls(stored)


@dataclass(frozen=True)
class RequestStamp:
    """A request's key and fingerprint; a stored one without fingerprint predates them."""

    key: RequestKey
    fingerprint: str | None


def is_repeat(request: RequestStamp, seen: RequestStamp | None) -> bool:
    """Whether `request` was handled before as `seen` (a replay), False when its key is
    new; `IdempotencyConflict` when the key was used for a different body. A stored key
    without a fingerprint (from before fingerprints were kept) replays as it always did."""
    if seen is None:
        return False
    if seen.key != request.key:
        raise ValueError("compared requests of different keys")
    if seen.fingerprint is not None and seen.fingerprint != request.fingerprint:
        raise IdempotencyConflict(request.key.value, from_message=request.key.from_message)
    return True


def find(stamps: Iterable[RequestStamp], key: RequestKey) -> RequestStamp | None:
    """The stamp of `key` among `stamps`, if any."""
    return next((stamp for stamp in stamps if stamp.key == key), None)
