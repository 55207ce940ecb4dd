"""What hostile producers put in message properties, and the checks shared by the tests
that send it (test_poison_properties.py, test_hostile_properties.py).

Every property kind here is accepted by RabbitMQ and could not be decoded by a strict
AMQP client (pamqp under aio-pika): before the service decoded properties leniently, one
such message dropped the worker's connection on every redelivery, for ever.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from aio_pika.abc import AbstractConnection
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError

from ..raw_amqp import Tagged, table, text_properties, timestamp

WORK_QUEUES = (
    "orders.place",
    "orders.action",
    "orders.get",
    "orders.list",
    "orders.stats",
    "orders.statuses",
)
"""The worker's queues, named like their routing keys."""

PAST_9999 = 10**15
"""A timestamp in milliseconds (pamqp reads values above 2**32 so) in the year 33658."""

NOT_UTF8 = b"x\xff\xfe"
T = Tagged

POISON_PROPERTIES: dict[str, tuple[str, dict[str, bytes]]] = {
    "timestamp past 9999": ("timestamp", {"timestamp": timestamp(PAST_9999)}),
    "largest timestamp": ("timestamp", {"timestamp": timestamp(2**64 - 1)}),
    **{
        f"{name} not UTF-8": (name, text_properties(**{name: NOT_UTF8}))
        for name in (
            "message_id",
            "correlation_id",
            "reply_to",
            "type",
            "app_id",
            "content_type",
            "content_encoding",
            "cluster_id",
        )
    },
    "header name not UTF-8": (
        "headers",
        {"headers": table([(NOT_UTF8, T.int8(1)), ("ok", T.text("kept"))])},
    ),
    "nested header name not UTF-8": (
        "headers",
        {"headers": table([("outer", T.table([(NOT_UTF8, T.void())]))])},
    ),
    "header timestamp past 9999": (
        "headers",
        {"headers": table([("when", T.timestamp(PAST_9999))])},
    ),
    "timestamp in a header array": (
        "headers",
        {"headers": table([("list", T.array([T.int8(1), T.timestamp(PAST_9999)]))])},
    ),
    "everything at once": (
        "message_id",
        {
            **text_properties(message_id=NOT_UTF8, reply_to=NOT_UTF8, correlation_id=NOT_UTF8),
            "timestamp": timestamp(PAST_9999),
            "headers": table([(NOT_UTF8, T.timestamp(PAST_9999))]),
        },
    ),
}
"""Properties a strict client cannot decode, by what is wrong with them: the property the
refusal names (one of them), and the properties."""

UNENCODABLE_HEADERS: dict[str, tuple[str, bytes]] = {
    "header text not UTF-8": ("text", T.text(NOT_UTF8)),
    "header double beyond a float": ("big", T.float64(1e300)),
}
"""Header values a strict client decodes but cannot encode again (name, tagged value): a
dead letter, which carries the headers, must still be published."""


def reconnects(log_path: Path, since: int) -> int:
    """How many times the worker's robust connection reconnected after byte `since` of its
    log (aio-pika logs each one)."""
    with log_path.open("rb") as log:
        log.seek(since)
        return log.read().count(b"closed. Reconnecting after")


def log_size(log_path: Path) -> int:
    return log_path.stat().st_size


async def work_queue_depths(connection: AbstractConnection) -> dict[str, int]:
    """Messages ready in each work queue (a passive declare per queue)."""
    depths: dict[str, int] = {}
    channel = await connection.channel()
    try:
        for name in WORK_QUEUES:
            queue = await channel.declare_queue(name, passive=True)
            depths[name] = queue.declaration_result.message_count or 0
    finally:
        await channel.close()
    return depths


async def purge_work_queues(connection: AbstractConnection) -> None:
    """Once a module's worker has stopped: a message it could never settle would haunt the
    next module's worker."""
    for name in WORK_QUEUES:
        with contextlib.suppress(AMQPError, ChannelInvalidStateError):
            channel = await connection.channel()
            try:
                await (await channel.get_queue(name, ensure=True)).purge()
            finally:
                if not channel.is_closed:
                    await channel.close()
