"""`make migrate-queues` (`python -m service.migrate_queues [--dry-run]`): move the messages
waiting in queues an older version declared (classic queues, or other limits) into the
queues this version declares, without losing any, with the workers stopped.

A queue's arguments cannot change once it exists, and a worker refuses to start on a queue
declared with other arguments (service/bootstrap.py, StaleQueues). For each such queue Q,
with the bindings the service gives it (service/topology.py, `Topology.declarations`):

1. declare `Q.migrating`, a quorum queue of no bindings;
2. move Q's messages into it while Q is still bound, so producers keep publishing into Q;
3. hand Q's bindings over one by one (bind `Q.migrating`, then unbind Q), move what is left,
   delete Q once it is empty
   (quorum queues refuse `if-empty`: a message published to Q by its name, on the default
   exchange, in the instant between the last check and the delete would be lost);
4. declare Q as this version does, unbound; move `Q.migrating` back into it the same way
   (move, bind Q, unbind `Q.migrating`, move what is left, delete `Q.migrating`).

A message is moved by publishing a copy (body and every property, headers included) with
publisher confirms, then acking the original: nothing is lost, and the order is kept. A
message published in the instant both queues of a switch are bound reaches both and is
moved twice: it arrives twice (commands carry message ids, so the service applies it once),
its second copy behind messages published just after it; one published between the last
move and the switch can also arrive behind them. With producers stopped neither happens.
A message without a message id gets one (the AMQP client adds it to every publish); a
`user_id` is kept in the header `x-original-user-id` (RabbitMQ refuses a publish whose
user_id is not the publishing user's). A message of a delay queue waits its delay again.

The history stream is left as it is: a stream is not consumed away, so it cannot be moved
without losing its offsets and timestamps, and its readers (downstream consumers) are no
reason to stop. It needs no migration: the worker keeps a stream that exists with other
retention arguments, which a policy changes in place (docs/event-history.md).

Every step can run again: after a crash, running the command again finishes the job (a
`Q.migrating` left behind is moved back into Q). Queues that have consumers are left alone
(a worker is still running), and so the command stops with an error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import Enum

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractIncomingMessage,
    AbstractQueue,
)

from service.amqp_connection import connect_any
from service.bootstrap import refusal_reason
from service.config import Settings
from service.topology import QueueDeclaration, is_stream, quorum_queue, topology

log = logging.getLogger("service.migrate_queues")

SUFFIX = ".migrating"
BATCH = 200
"""Messages moved between two acks: their copies are published together, in order."""
IDLE = 0.2
"""Seconds without a delivery after which a queue is checked for being empty."""


class State(Enum):
    CURRENT = "declared as this version does"
    ABSENT = "absent (the worker declares it)"
    STALE = "declared by an older version"
    BUSY = "has consumers: stop the workers first"


@dataclass(frozen=True)
class Plan:
    declaration: QueueDeclaration
    state: State
    reason: str
    messages: int
    leftover: int | None
    """Messages in a `Q.migrating` left by an interrupted run (None: there is none)."""

    @property
    def name(self) -> str:
        return self.declaration.queue.name

    @property
    def needed(self) -> bool:
        return self.state is State.STALE or self.leftover is not None

    def steps(self) -> list[str]:
        name, temporary = self.name, self.name + SUFFIX
        if self.state is State.BUSY:
            return [f"{name}: {self.state.value}"]
        if not self.needed:
            return [f"{name}: {self.state.value}, nothing to do"]
        steps = []
        if self.state is State.STALE:
            steps += [
                f"{name}: {self.reason} ({self.messages} message(s) waiting)",
                f"  declare {temporary} (quorum), move {name} -> {temporary}, "
                f"bind {temporary}, unbind {name}, move the rest, delete {name}",
            ]
        if self.leftover is not None:
            steps.append(f"{name}: {temporary} left by a run ({self.leftover} message(s))")
        steps.append(
            f"  declare {name} as this version does, move {temporary} -> {name}, "
            f"bind {name}, unbind {temporary}, move the rest, delete {temporary}"
        )
        return steps


class Migration:
    """The migration of every queue of one settings' topology, on one connection."""

    def __init__(self, connection: AbstractConnection, settings: Settings) -> None:
        self.connection = connection
        self.names = topology(settings)
        declarations = self.names.declarations()
        self.declarations = [d for d in declarations if not is_stream(d.queue)]
        self.streams = [d.queue.name for d in declarations if is_stream(d.queue)]

    async def plan(self) -> list[Plan]:
        return [await self._plan(declaration) for declaration in self.declarations]

    async def run(self, plans: list[Plan]) -> None:
        channel = await self.connection.channel()
        names = self.names
        for exchange in (names.commands, names.dead_letters, names.retry, names.requeue):
            await channel.declare_exchange(exchange.name, exchange.type.value, durable=True)
        await channel.close()
        for plan in plans:
            if plan.needed:
                await self._migrate(plan)

    async def _plan(self, declaration: QueueDeclaration) -> Plan:
        queue = declaration.queue
        found = await self._passive(queue.name)
        leftover = await self._passive(queue.name + SUFFIX)
        left = None if leftover is None else leftover[0]
        if found is None:
            return Plan(declaration, State.ABSENT, "", 0, left)
        messages, consumers = found
        if consumers or (leftover is not None and leftover[1]):
            return Plan(declaration, State.BUSY, "", messages, left)
        reason = await self._refusal(declaration)
        state = State.CURRENT if reason is None else State.STALE
        return Plan(declaration, state, reason or "", messages, left)

    async def _passive(self, name: str) -> tuple[int, int] | None:
        """(messages, consumers) of queue `name`, None when it does not exist."""
        channel = await self.connection.channel()
        try:
            declared = await channel.declare_queue(name, passive=True)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            return None
        finally:
            if not channel.is_closed:
                await channel.close()
        result = declared.declaration_result
        return result.message_count or 0, result.consumer_count or 0

    async def _refusal(self, declaration: QueueDeclaration) -> str | None:
        """Why RabbitMQ refuses to declare the (existing) queue as this version does, or
        None when it is declared so already (declaring it again changes nothing)."""
        channel = await self.connection.channel()
        try:
            await _declare(channel, declaration)
        except aio_pika.exceptions.ChannelPreconditionFailed as exc:
            return refusal_reason(exc)
        finally:
            if not channel.is_closed:
                await channel.close()
        return None

    async def _migrate(self, plan: Plan) -> None:
        name, temporary = plan.name, plan.name + SUFFIX
        if plan.state is State.STALE:
            async with self._channel() as channel:
                await channel.declare_queue(
                    temporary, durable=True, arguments=dict(quorum_queue(temporary).arguments)
                )
            await self._switch(name, temporary, plan.declaration.bindings)
        async with self._channel() as channel:
            await _declare(channel, plan.declaration)
        log.info("%s: declared as this version does", name)
        await self._switch(temporary, name, plan.declaration.bindings)

    @contextlib.asynccontextmanager
    async def _channel(self) -> AsyncIterator[AbstractChannel]:
        """A channel with publisher confirms, used for one step only: RabbitMQ 3.10 fails a
        channel that touched the classic queue and then publishes to the quorum queue that
        took its name (INTERNAL_ERROR, rabbitmq-server#4976)."""
        channel = await self.connection.channel(publisher_confirms=True)
        try:
            yield channel
        finally:
            if not channel.is_closed:
                await channel.close()

    async def _switch(
        self, source: str, target: str, bindings: tuple[tuple[str, str], ...]
    ) -> None:
        """Move `source` into `target`, hand `source`'s bindings over one by one (bind
        `target`, then unbind `source`), move the rest and delete `source`."""
        async with self._channel() as channel:
            moved = await _move(channel, source, target)
            old = await channel.get_queue(source, ensure=False)
            new = await channel.get_queue(target, ensure=False)
            for exchange, routing_key in bindings:
                await new.bind(exchange, routing_key)
                await old.unbind(exchange, routing_key)
            moved += await _move(channel, source, target)
            while (await self._passive(source) or (0, 0))[0]:
                moved += await _move(channel, source, target)  # one came in by its name
            await channel.queue_delete(source)
        log.info("%s -> %s: %d message(s) moved, %s deleted", source, target, moved, source)


async def _declare(channel: AbstractChannel, declaration: QueueDeclaration) -> AbstractQueue:
    queue = declaration.queue
    return await channel.declare_queue(
        queue.name, durable=True, arguments=dict(queue.arguments or {})
    )


async def _move(channel: AbstractChannel, source: str, target: str) -> int:
    """Move every message of `source` to `target`, in order, until `source` is empty.

    A consumer, not basic.get, which quorum queues with a single active consumer refuse.
    Each batch is published with confirms (in order, on one channel), then acked at once."""
    queue = await channel.get_queue(source, ensure=False)
    await channel.set_qos(prefetch_count=BATCH)
    arrived: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
    tag = await queue.consume(arrived.put, no_ack=False)
    moved = 0
    try:
        while True:
            batch = [arrived.get_nowait() for _ in range(min(arrived.qsize(), BATCH))]
            if batch:
                await _publish(channel, batch, target)
                moved += len(batch)
                continue
            # Caught up: done when nothing is ready either (what is on its way to the
            # consumer is taken after cancelling it, below).
            ready = await channel.declare_queue(source, passive=True)
            if not ready.declaration_result.message_count:
                break
            with contextlib.suppress(TimeoutError):
                first = await asyncio.wait_for(arrived.get(), IDLE)
                await _publish(channel, [first], target)
                moved += 1
    finally:
        await queue.cancel(tag)
    leftover = [arrived.get_nowait() for _ in range(arrived.qsize())]
    if leftover:  # delivered before the consumer was cancelled
        await _publish(channel, leftover, target)
        moved += len(leftover)
    return moved


async def _publish(
    channel: AbstractChannel, batch: list[AbstractIncomingMessage], target: str
) -> None:
    publishes = [
        asyncio.ensure_future(
            channel.default_exchange.publish(_copy(message), target, mandatory=True)
        )
        for message in batch
    ]
    await asyncio.gather(*publishes)
    await batch[-1].ack(multiple=True)


def _copy(message: AbstractIncomingMessage) -> aio_pika.Message:
    """The message as it was published: body and every property (user_id aside: RabbitMQ
    refuses one that is not the publishing user's, so it is kept in a header)."""
    headers = dict(message.headers or {})
    if message.user_id:
        headers.setdefault("x-original-user-id", message.user_id)
    return aio_pika.Message(
        message.body,
        headers=headers,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_mode=message.delivery_mode,
        priority=message.priority,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        expiration=message.expiration,
        message_id=message.message_id,
        timestamp=message.timestamp,
        type=message.type,
        app_id=message.app_id,
    )


async def migrate(settings: Settings, *, dry_run: bool = False) -> int:
    """Plan, print the plan, then (unless `dry_run`) migrate; the exit code: 0 when every
    queue is (or, with `dry_run`, can be) declared as this version does, 1 otherwise."""
    connection = await connect_any(settings.amqp_url.get_secret_value())
    async with connection:
        migration = Migration(connection, settings)
        plans = await migration.plan()
        for plan in plans:
            for step in plan.steps():
                sys.stdout.write(step + "\n")
        for stream in migration.streams:
            sys.stdout.write(f"{stream}: a stream, left as it is (retention: a policy)\n")
        busy = [plan.name for plan in plans if plan.state is State.BUSY]
        if busy:
            sys.stderr.write(
                f"migrate-queues: {', '.join(busy)} still have consumers: stop every worker "
                "and gateway, then run it again; nothing was changed\n"
            )
            return 1
        if dry_run or not any(plan.needed for plan in plans):
            sys.stdout.write("nothing changed (dry run)\n" if dry_run else "nothing to do\n")
            return 0
        await migration.run(plans)
        left = [plan.name for plan in await migration.plan() if plan.needed]
        if left:
            sys.stderr.write(f"migrate-queues: still to migrate: {', '.join(left)}\n")
            return 1
        sys.stdout.write("every queue is declared as this version does\n")
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m service.migrate_queues",
        description="Move the messages of queues declared by an older version into the "
        "queues this version declares (workers stopped; ORDERS_* settings).",
    )
    parser.add_argument("--dry-run", action="store_true", help="list what it would do")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return asyncio.run(migrate(Settings(), dry_run=args.dry_run))


if __name__ == "__main__":
    sys.exit(main())
