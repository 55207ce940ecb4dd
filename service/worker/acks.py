"""Acknowledgements of one channel sent together: one `basic.ack` with `multiple` for a run of
consecutive delivery tags that are all done, instead of one frame for each.

RabbitMQ turns every `basic.ack` on a quorum queue into a command in the queue's Raft log,
and every frame is a socket write on both sides. An ack waits `GATHER_SECONDS` for the
others done meanwhile (an action is acked once its own event is confirmed, so actions
finish one at a time, not in batches), then one multiple ack covers them all.

A multiple ack settles every unsettled delivery up to its tag on the channel, so it is sent
only up to the first delivery that is neither being acked now nor known settled: one still
in work (or left unacked on purpose, to be requeued) stops the run. The acks after it wait
up to `HOLD_SECONDS` for it to be done, then go out one by one. A delivery is known settled
once its own frame is queued, whether it was an ack or a nack or reject sent through
`settled` (service/worker/consumers.py, `Delivered`), so a multiple ack is never queued
ahead of it. Delivery tags start again at 1 on every channel, so each channel (the aiormq
one under aio-pika's robust channel, new after a reconnection) has its own record, dropped
with it.

A worker killed within those milliseconds leaves the acks unsent: RabbitMQ redelivers those
messages, which were applied already, and idempotency answers them as before.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from aio_pika.abc import AbstractIncomingMessage

GATHER_SECONDS = 0.01
"""How long the first ack of a flush waits for others to go out with it."""
HOLD_SECONDS = 0.1
"""How long an ack behind a delivery still in work waits for that one to be done (and one
multiple ack to cover both) before it goes out on its own."""


class ChannelAcks:
    """The acks not sent yet on one channel, and the tags settled above the first one that
    is not."""

    def __init__(self, channel: Any) -> None:
        self._channel = channel
        self._floor = 1
        """The lowest delivery tag not known to be settled."""
        self._settled: set[int] = set()
        """Tags above the floor already settled."""
        self._waiting: dict[int, asyncio.Future[None]] = {}
        self._held_since: float | None = None
        """When the oldest ack held behind a delivery in work began to wait."""
        self._flush_soon = False
        self._timer: asyncio.TimerHandle | None = None

    def ack(self, tag: int) -> asyncio.Future[None]:
        """Ack `tag` with the others done within `GATHER_SECONDS` (behind a delivery still
        in work, within `HOLD_SECONDS`); the future is done once its frame is queued, or
        fails as `basic_ack` would."""
        done = self._waiting.get(tag)
        if done is None:
            done = self._waiting[tag] = asyncio.get_running_loop().create_future()
        if not self._flush_soon:
            self._flush_soon = True
            asyncio.get_running_loop().call_later(GATHER_SECONDS, self._flush)
        return done

    def settled(self, tag: int) -> None:
        """`tag` was settled another way (its frame is queued): a run may pass over it."""
        if tag >= self._floor:
            self._settled.add(tag)

    def _flush(self) -> None:
        self._flush_soon = False
        waiting = self._waiting
        top = None
        tag = self._floor
        while tag in waiting or tag in self._settled:
            if tag in waiting:
                top = tag
            self._settled.discard(tag)
            tag += 1
        self._floor = tag
        in_run = [t for t in waiting if top is not None and t <= top]
        sent = {t: waiting.pop(t) for t in in_run}
        singles: list[int] = []
        if not waiting:
            self._held_since = None
        else:
            now = asyncio.get_running_loop().time()
            if self._held_since is None:
                self._held_since = now
            if now - self._held_since >= HOLD_SECONDS:
                singles = sorted(waiting)
                sent |= waiting
                waiting.clear()
                self._held_since = None
            elif self._timer is None:
                self._timer = asyncio.get_running_loop().call_at(
                    self._held_since + HOLD_SECONDS, self._on_time
                )
        if sent:
            task = asyncio.ensure_future(self._send(top, singles, sent))
            task.add_done_callback(_retrieve)

    def _on_time(self) -> None:
        self._timer = None
        self._flush()

    async def _send(
        self, top: int | None, singles: list[int], sent: dict[int, asyncio.Future[None]]
    ) -> None:
        try:
            # `wait=False`: each frame is queued before `basic_ack` returns (a channel's
            # frames go out in the order they are queued); nothing waits for the socket.
            if top is not None:
                await self._channel.basic_ack(top, multiple=True, wait=False)
            for single in singles:
                await self._channel.basic_ack(single, multiple=False, wait=False)
                self.settled(single)
        except Exception as exc:  # the channel closed: every ack in this flush fails with it
            for done in sent.values():
                if not done.done():
                    done.set_exception(exc)
            return
        for done in sent.values():
            if not done.done():
                done.set_result(None)


def _retrieve(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()


_ACKS: weakref.WeakKeyDictionary[Any, ChannelAcks] = weakref.WeakKeyDictionary()


def _acks_of(channel: Any) -> ChannelAcks:
    acks = _ACKS.get(channel)
    if acks is None:
        acks = _ACKS[channel] = ChannelAcks(channel)
    return acks


async def ack(raw: AbstractIncomingMessage) -> None:
    """Ack one delivery of a worker's own consumer, together with the others done now."""
    if raw.delivery_tag is None:
        await raw.ack()
        return
    channel = raw.channel  # raises as `raw.ack()` would once the channel is closed
    raw.lock()  # settled here: FastStream's wrapper will not settle it again
    await _acks_of(channel).ack(raw.delivery_tag)


def settled(raw: AbstractIncomingMessage) -> None:
    """A delivery was nacked or rejected directly (its frame queued)."""
    if raw.delivery_tag is None:
        return
    try:
        channel = raw.channel
    except Exception:  # closed: its record goes with it
        return
    _acks_of(channel).settled(raw.delivery_tag)
