"""Actions spread over the workers by order, each order's actions still in publish order.

Producers publish every action to `orders.action`. One worker at a time routes them (the
queue has a single active consumer): it names the action's order (its `id`, or its
`order_id` looked up once), and forwards the message unchanged to the partition queue
`orders.action.<n>` with n = id mod partitions, in delivery order, with publisher confirms,
acking each action once its copy is confirmed. A message that names no order (a bad body,
undecodable properties) cannot be applied, so its order does not matter: the courier
refuses it at once. The router consumes `orders.action` itself, as a plain aio-pika
consumer (service/worker/consumers.py) like the partitions': a FastStream subscriber's
per-message machinery cost more than the routing.

Each partition queue has a single active consumer too, and every worker consumes every
partition: when the active worker of a partition goes away, RabbitMQ hands the partition
to a waiting worker at once, with the unacknowledged actions requeued in their place.

Which worker *should* be active on a partition is agreed through MongoDB
(service/store/membership.py): partition n belongs to the n-th (mod count) of the live
workers sorted by id. A worker that receives an action from a partition that belongs to
another live worker hands the partition over: it admits nothing more from it, lets the
admitted actions finish, closes the partition's channel (RabbitMQ requeues the rest, in
order, and activates the next waiting consumer) and consumes it again at the back of the
line. A partition is handed over at most once per cool-down, so a worker that has just died
(its entry not yet aged out) costs at most one such round.

While the router's worker is the only live one, the hop through the partitions buys
nothing: the router applies each action itself, in its turn, as the partition consumers
would (`ActionRouter._decide`). It goes there only once nothing it forwarded is still on
its way: it sends a barrier through every partition, after the copies already forwarded,
and waits until its own partition consumers have passed every barrier and finished what
came before them. A barrier that another worker's consumer receives (one still holding a
partition) never comes back, and the router keeps forwarding. When a second worker appears,
the router lets the actions it is applying finish before it forwards the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
import zlib
from collections.abc import Callable, Hashable
from functools import partial
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustConnection,
)

from service.amqp_decoding import republishable, undecodable
from service.application.retries import TransientExhausted, with_retries
from service.metrics import ConsumeMetrics, ServiceMetrics
from service.store.membership import Member, Membership
from service.topology import ACTION, Topology
from service.worker import acks
from service.worker.consumers import QueueConsumer, delivered
from service.worker.delivery import Courier, Work, channel_of
from service.worker.publishing import ConfirmedExchange
from service.worker.sequencing import Abandoned, DeliveryGate, Draining, OrderNumbers, Turn

log = logging.getLogger(__name__)

BARRIER_HEADER = "x-orders-barrier"
"""Marks a partition message that carries no action: the router's barrier."""
BARRIER_SECONDS = 2.0
"""How long the router sends its barriers and waits for them and what came before them
(routing waits meanwhile)."""
DIRECT_RETRY_SECONDS = 10.0
"""After barriers that did not come back, how long the router forwards before it tries
again."""
HANDOVER_COOLDOWN_SECONDS = 10.0
RESUBSCRIBE_PAUSE_SECONDS = 0.5
FORWARD_RETRY_FIRST_PAUSE = 0.1
FORWARD_RETRY_MAX_PAUSE = 2.0


def partition_of(key: Hashable, partitions: int) -> int:
    """The partition of an order: its id mod the count (consecutive orders take turns);
    an order known only by an `order_id` not found, by a stable hash of that."""
    if isinstance(key, int):
        return key % partitions
    return zlib.crc32(repr(key).encode()) % partitions


def new_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class ActionRouter:
    """Consumes `orders.action` and forwards each action to its order's partition queue."""

    def __init__(
        self,
        topology: Topology,
        courier: Courier,
        act: Work,
        connection: Callable[[], AbstractRobustConnection | None],
        *,
        max_message_bytes: int,
        transient_retry_seconds: float,
        prefetch: int = 1,
        metrics: ConsumeMetrics | None = None,
        solo: Solo | None = None,
        numbers: OrderNumbers | None = None,
    ) -> None:
        self._topology = topology
        self._courier = courier
        self._act = act
        self._max_bytes = max_message_bytes
        self._retry_seconds = transient_retry_seconds
        self.intake = QueueConsumer(
            topology.queue(ACTION).name,
            self.route,
            connection,
            prefetch=prefetch,
            metrics=metrics,
        )
        """The consumer of `orders.action`, on a channel of its own: its delivery tags number
        the actions alone, which is what keeps them in order on their way to the partitions.
        Its single active consumer is the queue's own argument (service/topology.py); on
        shutdown or a restart its channel is closed without cancelling, so RabbitMQ requeues
        the actions held, in their place, before the next active consumer takes over. An
        action whose routing failed is left unacked, to come back in its place so."""
        self.gate = DeliveryGate()
        self.numbers = numbers or OrderNumbers()
        self._forwarding = ConfirmedExchange(connection, topology.partition_exchange.name)
        """The channel of the forwarded copies."""
        self._tails: dict[int, asyncio.Future[None]] = {}
        """Per partition, the future of the last copy admitted to it."""
        self._solo = solo
        self._deciding = asyncio.Lock()
        """Held while an admitted action is given its way (first come first served)."""
        self.direct = False
        """Whether actions are applied here rather than forwarded."""
        self._next_try = 0.0

    async def route(self, raw: AbstractIncomingMessage) -> None:
        channel, exchange = await self._forwarding.open()
        try:
            key = await self._order_key(raw)
        except Exception:  # too deep to parse, a lookup that failed for good: refused below
            log.info("action names no order it can be routed by", exc_info=True)
            key = None
        try:
            await self.gate.admit(channel_of(raw), raw.delivery_tag or 0)
        except (Draining, Abandoned):
            return  # left unacked: requeued in its place when the channel closes
        if key is None:  # names no order: refused at once, wherever it stood
            await self._courier.serve(delivered(raw), self._act, routing_key=ACTION)
            return
        partition = partition_of(key, self._topology.partitions)
        # Each action's way is decided in admission order (an uncontended lock is taken
        # without a pause, a contended one first come first served).
        async with self._deciding:
            direct = await self._decide(exchange)
            if self.gate.closed:  # shutting down (checked after any wait in `_decide`)
                return  # left unacked: requeued in its place when the channel closes
            if direct:
                turn = self._courier.admission.admitted(channel_of(raw))
            else:
                # Each partition's copies are published one after another, in admission
                # order: a copy waits until the one before it (in its partition) is
                # confirmed, so a copy the broker refuses and that is published again can
                # never be overtaken.
                turn = None
                previous = self._tails.get(partition)
                mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self._tails[partition] = mine
        if turn is not None:
            await self._apply(raw, turn, partition)
            return
        try:
            if previous is not None:
                await asyncio.shield(previous)
            forwarded = await self._forward(raw, channel, exchange, partition)
        except Exception:  # a copy that cannot be encoded: served here, where it stands
            log.exception("could not forward an action to partition %d", partition)
            await self._courier.serve(delivered(raw), self._act, routing_key=ACTION)
            return
        finally:
            mine.set_result(None)
            if self._tails.get(partition) is mine:
                del self._tails[partition]
        if forwarded:
            await acks.ack(raw)

    async def _apply(self, raw: AbstractIncomingMessage, turn: Turn, partition: int) -> None:
        """Apply an action here, in its turn, as its partition's consumer would."""
        applied = await self._courier.serve(
            delivered(raw), self._act, ordered=True, routing_key=ACTION, admitted=turn
        )
        if applied and self._solo is not None:
            self._solo.applied(partition)

    async def _decide(self, exchange: AbstractExchange) -> bool:
        """Whether the next action is applied here: yes while this worker is the only live
        one and nothing it forwarded is still on its way. Called in admission order."""
        solo = self._solo
        if solo is None:
            return False
        alone = solo.alone()
        if self.direct and alone is False:  # another worker joined
            await self._courier.admission.idle()  # the actions applied here finish first
            self.direct = False
            solo.switched(direct=False)
        elif not self.direct and alone and time.monotonic() >= self._next_try:
            self.direct = await self._quiesce(exchange, solo.barriers)
            if self.direct:
                solo.switched(direct=True)
            else:
                self._next_try = time.monotonic() + DIRECT_RETRY_SECONDS
        return self.direct

    async def _quiesce(self, exchange: AbstractExchange, barriers: Barriers) -> bool:
        """Send a barrier through every partition, after the copies already forwarded, and
        wait until this worker's partition consumers passed every one of them and finished
        what they admitted before. False when that does not happen in time: a barrier went
        to another worker's consumer, or the broker did not take it."""
        for tail in list(self._tails.values()):
            await asyncio.shield(tail)  # the copies already admitted go out first
        token = uuid.uuid4().hex
        passed = barriers.expect(token, self._topology.partitions)
        try:
            async with asyncio.timeout(BARRIER_SECONDS):
                for partition in range(self._topology.partitions):
                    await exchange.publish(
                        aio_pika.Message(b"", headers={BARRIER_HEADER: token}),
                        routing_key=str(partition),
                    )
                await passed
                await self._courier.admission.idle()
        except Exception as exc:  # not in time, or not taken: forwarding stays correct
            log.info("still forwarding actions: barriers did not pass (%s)", type(exc).__name__)
            return False
        finally:
            barriers.forget(token)
        return True

    async def _forward(
        self,
        raw: AbstractIncomingMessage,
        channel: AbstractRobustChannel,
        exchange: AbstractExchange,
        partition: int,
    ) -> bool:
        """Publish the action's copy until it is confirmed, holding the action meanwhile: a
        copy refused (on a cluster, the partition queue without a leader for a moment) or
        lost with a connection is published again, with back-off; handing the action back
        instead would redeliver it at once, over and over, each time counted against the
        action queue's delivery limit. False when the action's own delivery channel closed
        first: RabbitMQ redelivers it (in its place, on the new channel), so this copy must
        not be published after the ones that follow it."""
        copy = _copy(raw)
        pause = FORWARD_RETRY_FIRST_PAUSE
        while True:
            await channel.ready()  # returns at once while the router's channel is open
            if channel_of(raw).is_closed:
                return False
            try:
                await exchange.publish(copy, routing_key=str(partition))
            except (aio_pika.exceptions.AMQPError, ConnectionError) as exc:
                log.warning(
                    "partition %d did not take an action (%s); again in %.1fs",
                    partition,
                    type(exc).__name__,
                    pause,
                )
                await asyncio.sleep(pause)
                pause = min(pause * 2, FORWARD_RETRY_MAX_PAUSE)
            else:
                return True

    async def _order_key(self, raw: AbstractIncomingMessage) -> Hashable | None:
        """The order the action names (its database id when it can be known), or None when
        the message cannot name one."""
        if undecodable(raw.headers) is not None or len(raw.body) > self._max_bytes:
            return None
        try:
            body = json.loads(raw.body)
        except ValueError:
            return None
        if not isinstance(body, dict):
            return None
        id, order_id = _positive(body.get("id")), _positive(body.get("order_id"))
        if id is not None:
            return id
        if order_id is None:
            return None
        found = None
        try:
            found = await with_retries(lambda: self.numbers.id_of(order_id), self._retry_seconds)
        except TransientExhausted:
            log.warning("could not look up order %d to route its action", order_id)
        return found if found is not None else ("order_id", order_id)


def _positive(value: Any) -> int | None:
    """An id as the contract allows it, or None."""
    valid = isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**63
    return value if valid else None


def _copy(raw: AbstractIncomingMessage) -> aio_pika.Message:
    """The action as it was published, persistent; without `user_id`, which RabbitMQ checks
    against the publishing connection's user; its headers as the courier republishes them
    (values pamqp decodes but cannot encode again, as text; at most 64 KiB of them)."""
    return aio_pika.Message(
        raw.body,
        headers=republishable(raw.headers),
        content_type=raw.content_type,
        content_encoding=raw.content_encoding,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        priority=raw.priority,
        correlation_id=raw.correlation_id,
        reply_to=raw.reply_to,
        expiration=raw.expiration,
        message_id=raw.message_id,
        timestamp=raw.timestamp,
        type=raw.type,
        app_id=raw.app_id,
    )


class Ownership:
    """Which live worker each partition belongs to, as of the last renewal."""

    def __init__(
        self, worker_id: str, partitions: int, *, lease_seconds: float, clock: Any = None
    ) -> None:
        self.worker_id = worker_id
        self.partitions = partitions
        self._lease = lease_seconds
        self._clock: Callable[[], float] = clock or time.monotonic
        self._owners: list[str] = []
        self._fresh_until = 0.0
        self._handed_over: dict[int, float] = {}

    def update(self, live: list[Member]) -> None:
        """The live workers, as just read: who owns what, until the lease runs out."""
        peers = sorted(m.worker_id for m in live if m.partitions == self.partitions)
        if self.worker_id not in peers:
            peers = sorted([*peers, self.worker_id])
        self._owners = [peers[n % len(peers)] for n in range(self.partitions)]
        self._fresh_until = self._clock() + self._lease

    def alone(self) -> bool | None:
        """Whether this worker owns every partition, or None when the last view is too old
        to tell."""
        if not self._owners or self._clock() > self._fresh_until:
            return None
        return all(owner == self.worker_id for owner in self._owners)

    def owner(self, partition: int) -> str | None:
        """The partition's owner, or None when the last view is too old to act on."""
        if not self._owners or self._clock() > self._fresh_until:
            return None
        return self._owners[partition]

    def mine(self) -> list[int]:
        return [n for n in range(self.partitions) if self.owner(n) == self.worker_id]

    def should_hand_over(self, partition: int) -> bool:
        """Whether an action just received from `partition` means: give it to its owner
        (another live worker), at most once per cool-down."""
        owner = self.owner(partition)
        if owner is None or owner == self.worker_id:
            return False
        now = self._clock()
        if now - self._handed_over.get(partition, -HANDOVER_COOLDOWN_SECONDS) < (
            HANDOVER_COOLDOWN_SECONDS
        ):
            return False
        self._handed_over[partition] = now
        return True


class Barriers:
    """The router's barriers on their way through the partitions: each round waits until
    this worker's consumers passed one in every partition."""

    def __init__(self) -> None:
        self._rounds: dict[str, tuple[set[int], asyncio.Future[None]]] = {}

    def expect(self, token: str, partitions: int) -> asyncio.Future[None]:
        passed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._rounds[token] = (set(range(partitions)), passed)
        return passed

    def passed(self, token: str, partition: int) -> None:
        round = self._rounds.get(token)
        if round is None:  # given up on
            return
        left, done = round
        left.discard(partition)
        if not left and not done.done():
            done.set_result(None)

    def forget(self, token: str) -> None:
        self._rounds.pop(token, None)


class Solo:
    """What the router needs to apply actions itself while its worker is the only live
    one: the ownership, the barriers, and the metrics it keeps meanwhile."""

    def __init__(
        self, ownership: Ownership, barriers: Barriers, metrics: ServiceMetrics | None = None
    ) -> None:
        self.ownership = ownership
        self.barriers = barriers
        self._metrics = metrics

    def alone(self) -> bool | None:
        return self.ownership.alone()

    def applied(self, partition: int) -> None:
        """An action of `partition` applied by the router: counted as the partition's."""
        if self._metrics is not None:
            self._metrics.partition_action(partition)

    def switched(self, *, direct: bool) -> None:
        if direct:
            log.info("the only live worker: applying actions without the partition hop")
        else:
            log.info("another worker is live: forwarding actions to the partitions")
        if self._metrics is not None:
            self._metrics.action_routing(direct=direct)


class PartitionConsumers:
    """This worker's consumers of every partition queue, one channel each."""

    def __init__(
        self,
        topology: Topology,
        courier: Courier,
        act: Work,
        ownership: Ownership,
        metrics: ServiceMetrics,
        *,
        prefetch: int,
        grace_seconds: float,
        barriers: Barriers | None = None,
    ) -> None:
        self._topology = topology
        self._courier = courier
        self._act = act
        self.ownership = ownership
        self._barriers = barriers
        self._metrics = metrics
        self._grace = grace_seconds
        self._connection: AbstractRobustConnection | None = None
        self._consumers = [
            QueueConsumer(
                topology.partition_queue(partition).name,
                partial(self._deliver, partition),
                lambda: self._connection,
                prefetch=prefetch,
            )
            for partition in range(topology.partitions)
        ]
        self._handovers: set[asyncio.Task[None]] = set()
        self._closing = False

    async def start(self, connection: AbstractRobustConnection) -> None:
        self._connection = connection
        for partition in range(self._topology.partitions):
            await self._consume(partition)

    async def _consume(self, partition: int) -> None:
        if self._connection is None or self._closing:
            return
        await self._consumers[partition].start(self._connection)

    async def _deliver(self, partition: int, raw: AbstractIncomingMessage) -> None:
        token = (raw.headers or {}).get(BARRIER_HEADER)
        if token is not None:
            await self._pass_barrier(partition, raw, token)
            return
        if self.ownership.should_hand_over(partition):
            task = asyncio.create_task(self.hand_over(partition), name=f"hand-over-{partition}")
            self._handovers.add(task)
            task.add_done_callback(self._handovers.discard)
        if await self._courier.serve(delivered(raw), self._act, ordered=True, routing_key=ACTION):
            self._metrics.partition_action(partition)

    async def _pass_barrier(self, partition: int, raw: AbstractIncomingMessage, token: Any) -> None:
        """A router's barrier: passed once every earlier delivery of its channel was
        admitted (and so counts as in flight until it is done); acked, nothing applied. One
        from another worker's router, or given up on, is only acked."""
        if not await self._courier.admission.admit_in_order(channel_of(raw), raw.delivery_tag or 0):
            return  # left unacked: requeued in its place when the channel closes
        with contextlib.suppress(Exception):
            await acks.ack(raw)
        if self._barriers is not None:
            text = token.decode(errors="replace") if isinstance(token, bytes) else str(token)
            self._barriers.passed(text, partition)

    async def missing(self) -> list[str]:
        """Partition queues this worker does not consume right now (readiness)."""
        return [consumer.queue for consumer in self._consumers if not await consumer.attached()]

    async def hand_over(self, partition: int) -> None:
        """Let the admitted actions of `partition` finish, close its channel (the rest go
        back, in order, to the next waiting worker) and join the line again."""
        consumer = self._consumers[partition]
        channel = consumer.channel
        if channel is None or channel.is_closed:
            return
        log.info("handing partition %d over to %s", partition, self.ownership.owner(partition))
        self._metrics.partition_handover(partition)
        with contextlib.suppress(Exception):
            underlay = await channel.get_underlay_channel()
            await self._courier.admission.drain_channel(underlay, self._grace)
        await consumer.close()
        while not self._closing:  # until it consumes again (the broker may be away)
            await asyncio.sleep(RESUBSCRIBE_PAUSE_SECONDS)
            try:
                await self._consume(partition)
            except Exception as exc:
                log.warning("could not consume partition %d again (%s)", partition, exc)
            else:
                return

    async def close(self) -> None:
        """Shutting down, after the admitted actions finished: close every partition's
        channel without cancelling, so RabbitMQ requeues what is held, in order."""
        self._closing = True
        for task in list(self._handovers):
            task.cancel()
        for consumer in self._consumers:
            await consumer.close()


class MembershipLoop:
    """Renews this worker's entry and refreshes the ownership, every `interval` seconds."""

    def __init__(self, membership: Membership, ownership: Ownership, interval: float) -> None:
        self._membership = membership
        self._ownership = ownership
        self._interval = interval

    async def run(self) -> None:
        me = Member(self._ownership.worker_id, self._ownership.partitions)
        while True:
            try:
                await self._membership.renew(me)
                self._ownership.update(await self._membership.live())
            except Exception as exc:  # MongoDB away: the last view ages out, nothing moves
                log.warning("could not renew worker membership: %s", type(exc).__name__)
            await asyncio.sleep(self._interval)

    async def leave(self) -> None:
        with contextlib.suppress(Exception):
            await self._membership.leave(self._ownership.worker_id)
