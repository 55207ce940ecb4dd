"""Where the worker may send a reply.

A reply goes to the default exchange with routing key = `reply_to`, which names a queue. A
producer allowed to publish only to `orders` could otherwise have the worker deliver JSON
into any queue of the vhost (a confused deputy). So replies go only to:

- server-named queues (`amq.gen-...`; no client can declare a queue named `amq.*`),
- direct reply-to (the consumer sees `amq.rabbitmq.reply-to.<token>`),
- queues whose whole name matches the `reply_queue_pattern` setting (empty: none).

A message whose `reply_to` names any other queue gets no reply and is dead-lettered as
`bad_request`; a command is also announced as `order.command_rejected` and not applied.
"""

from __future__ import annotations

import re

from service.domain.errors import BadRequest

SERVER_NAMED_PREFIX = "amq.gen-"
DIRECT_REPLY_TO_PREFIX = "amq.rabbitmq.reply-to."
SHOWN_CHARACTERS = 255


class ReplyQueues:
    """Decides whether a `reply_to` is a reply queue."""

    def __init__(self, pattern: str = "") -> None:
        self._pattern = re.compile(pattern) if pattern else None

    def allows(self, reply_to: str) -> bool:
        if reply_to.startswith((SERVER_NAMED_PREFIX, DIRECT_REPLY_TO_PREFIX)):
            return True
        return self._pattern is not None and self._pattern.fullmatch(reply_to) is not None

    @staticmethod
    def refusal(reply_to: str) -> BadRequest:
        """The error for a `reply_to` that `allows` refused."""
        shown = reply_to[:SHOWN_CHARACTERS]
        return BadRequest(
            f"reply_to {shown!r} is not a reply queue: replies go to server-named (amq.gen-) "
            "queues, to direct reply-to, or to queues the service is configured to allow",
            {"reply_to": shown},
        )
