"""Where replies may go: server-named queues, direct reply-to, and the configured names."""

from __future__ import annotations

import pytest

from service.config import Settings
from service.worker.replies import ReplyQueues


@pytest.mark.parametrize(
    ("reply_to", "allowed"),
    [
        ("amq.gen-Xa2bQ", True),
        ("amq.rabbitmq.reply-to.g1h2AA==", True),
        ("replies.billing", True),
        ("replies.", False),  # the whole name must match
        ("xreplies.billing", False),
        ("replies.billing.x", True),
        ("orders.place", False),
        ("fulfilment.orders", False),
        ("amq.rabbitmq.reply-to", False),  # the broker never shows the bare name
        ("amq.gen", False),
    ],
)
def test_replies_go_to_reply_queues_only(reply_to: str, allowed: bool) -> None:
    assert ReplyQueues(r"replies\..+").allows(reply_to) is allowed


def test_no_named_reply_queue_by_default() -> None:
    queues = ReplyQueues()
    assert queues.allows("amq.gen-1")
    assert not queues.allows("replies.billing")
    assert not queues.allows("")
    refusal = queues.refusal("replies.billing")
    assert refusal.code == "bad_request"
    assert refusal.details == {"reply_to": "replies.billing"}


def test_the_setting_must_be_a_regular_expression() -> None:
    assert Settings(reply_queue_pattern=r"replies\..+").reply_queue_pattern == r"replies\..+"
    with pytest.raises(ValueError, match="not a regular expression"):
        Settings(reply_queue_pattern="replies.(")
