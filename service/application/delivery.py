"""What an entry point tells a use case about how a request arrived."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Delivery:
    """What the transport knows about a request: its message id and correlation id."""

    message_id: str | None = None
    """What a request without a key of its own is known by (a namespace of its own)."""
    correlation_id: str | None = None
    reply: bool = True
    """Whether anybody waits for a reply (`reply_to`): without one, no reply data is built."""
