"""Per-order sequencing inside one worker.

RabbitMQ delivers a queue's messages in order, but FastStream runs each delivery as its own
task, and tasks reach the handler in any order. `DeliveryGate` admits deliveries of one
channel in delivery-tag order again; `OrderedRunner` then runs the work for one order
strictly one after another, in admission order, while different orders run concurrently.
Across workers each action partition queue is single-active-consumer, so one worker at a
time holds it (service/worker/partitions.py).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pymongo.errors import PyMongoError

T = TypeVar("T")
log = logging.getLogger(__name__)


class Draining(Exception):
    """The worker is shutting down: this delivery is left for the next active consumer."""


class Abandoned(Exception):
    """The delivery's channel closed before it was admitted: its redelivered copy counts."""


@dataclass
class _Channel:
    next_tag: int = 1
    waiting: dict[int, asyncio.Future[None]] = field(default_factory=dict)
    closed: bool = False


class DeliveryGate:
    """Admits the deliveries of each channel in delivery-tag order.

    Tags on a channel count up from 1 without gaps, so a delivery waits for its predecessor.
    Under load a task can take a while to get here, so the wait is generous; a predecessor
    that never arrives (it cannot, short of a bug: every delivery of the channel reaches
    this gate) is given up on after `patience` seconds, in order, so nothing waits forever.
    """

    def __init__(self, patience: float = 10.0) -> None:
        self._patience = patience
        self._channels: weakref.WeakKeyDictionary[object, _Channel] = weakref.WeakKeyDictionary()
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether the gate admits nothing more (shutting down)."""
        return self._closed

    def close(self) -> None:
        """Admit nothing more (shutting down): waiting and later deliveries get `Draining`."""
        self._closed = True
        for state in self._channels.values():
            for turn in state.waiting.values():
                if not turn.done():
                    turn.set_result(None)

    def close_channel(self, channel: Any) -> None:
        """Admit nothing more from `channel` (it is being handed over): its waiting and
        later deliveries get `Draining`."""
        state = self._channels.get(channel)
        if state is None:
            state = self._channels[channel] = _Channel()
        state.closed = True
        for turn in state.waiting.values():
            if not turn.done():
                turn.set_result(None)

    async def admit(self, channel: Any, tag: int) -> None:
        """Return when every earlier delivery of `channel` was admitted.

        Raises `Draining` when shutting down and `Abandoned` when the channel closed: its
        unacknowledged deliveries are redelivered, so from the first one not yet admitted
        on, they are left to their redelivered copies. The admitted ones are a prefix of the
        channel's deliveries and all run, in order.
        """
        state = self._channels.get(channel)
        if state is None:  # a new channel (start-up or after a reconnect): tags restart at 1
            state = self._channels[channel] = _Channel()
        while tag > state.next_tag:
            self._check(channel, state)
            turn = asyncio.get_running_loop().create_future()
            state.waiting[tag] = turn
            try:
                await asyncio.wait_for(asyncio.shield(turn), self._patience)
            except TimeoutError:
                if tag == min(state.waiting):  # the gap never filled: skip it, still in order
                    log.warning("delivery %d gave up on %d", tag, state.next_tag)
                    state.next_tag = tag
            finally:
                state.waiting.pop(tag, None)
        self._check(channel, state)
        state.next_tag = max(state.next_tag, tag + 1)
        _wake(state, state.next_tag)

    def _check(self, channel: Any, state: _Channel) -> None:
        if self._closed or state.closed:
            raise Draining
        if getattr(channel, "is_closed", False):
            for waiting in list(state.waiting):  # they all give up too
                _wake(state, waiting)
            raise Abandoned


def _wake(state: _Channel, tag: int) -> None:
    turn = state.waiting.get(tag)
    if turn is not None and not turn.done():
        turn.set_result(None)


class KeyedSequencer:
    """Runs work for the same key one at a time, in the order `enter` was called."""

    def __init__(self) -> None:
        self._tails: dict[Hashable, asyncio.Future[None]] = {}

    def enter(self, key: Hashable) -> Slot:
        """Take the next place for `key` (synchronously: the order of calls is the order)."""
        previous = self._tails.get(key)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tails[key] = done
        return Slot(self, key, previous, done)

    def _leave(self, key: Hashable, done: asyncio.Future[None]) -> None:
        done.set_result(None)
        if self._tails.get(key) is done:
            del self._tails[key]


@dataclass
class Slot:
    """A place in one key's line: `async with slot:` waits for the ones before it."""

    sequencer: KeyedSequencer
    key: Hashable
    previous: asyncio.Future[None] | None
    done: asyncio.Future[None]

    async def __aenter__(self) -> None:
        if self.previous is not None:
            try:
                await asyncio.shield(self.previous)
            except BaseException:
                self.sequencer._leave(self.key, self.done)
                raise

    async def __aexit__(self, *_: object) -> None:
        self.sequencer._leave(self.key, self.done)


@dataclass
class Turn:
    """A delivery's place among the admitted ones, until it has named its order."""

    previous: asyncio.Future[None] | None
    mine: asyncio.Future[None]

    def release(self) -> None:
        if not self.mine.done():
            self.mine.set_result(None)


OrderIdLookup = Callable[[int], Awaitable[int | None]]
KNOWN_ORDER_NUMBERS = 100_000


class OrderNumbers:
    """The database id of each public order number (`order_id`) found, remembered: an
    order's number never changes. One per worker, shared by the action router and the
    sequencer, so that an order named by its number is looked up once (at most
    `KNOWN_ORDER_NUMBERS` are kept; then the memory starts again)."""

    def __init__(self, lookup: OrderIdLookup | None = None) -> None:
        self.lookup = lookup
        """Set once MongoDB is open (service/app.py)."""
        self._ids: dict[int, int] = {}

    async def id_of(self, order_id: int) -> int | None:
        """The order's id, or None when no order has this number (or nothing can look it
        up yet); raises what the lookup raised."""
        found = self._ids.get(order_id)
        if found is not None or self.lookup is None:
            return found
        found = await self.lookup(order_id)
        if found is not None:
            if len(self._ids) >= KNOWN_ORDER_NUMBERS:
                self._ids.clear()
            self._ids[order_id] = found
        return found


class OrderedRunner:
    """Applies each order's actions in the order they were delivered.

    The gate admits deliveries in delivery-tag order; each admitted delivery takes a `Turn`;
    it then names its order by database id (an `order_id` is looked up once and
    remembered: it never changes), and joins that order's line strictly in turn, so that
    an order addressed by `id` in one action and by `order_id` in the next is still one
    line. Lines of different orders run concurrently.
    """

    def __init__(self) -> None:
        self.gate = DeliveryGate()
        self.numbers = OrderNumbers()
        self._sequencer = KeyedSequencer()
        self._last: asyncio.Future[None] | None = None

    def turn(self) -> Turn:
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        turn, self._last = Turn(self._last, mine), mine
        return turn

    async def run(self, turn: Turn, body: dict[str, Any], work: Callable[[], Awaitable[T]]) -> T:
        try:
            key = await self._key(body)
            if turn.previous is not None:
                await asyncio.shield(turn.previous)
            slot = self._sequencer.enter(key)
        finally:
            turn.release()
        async with slot:
            return await work()

    async def _key(self, body: dict[str, Any]) -> Hashable:
        id, order_id = body.get("id"), body.get("order_id")
        if isinstance(id, int) and not isinstance(id, bool):
            return id
        if isinstance(order_id, int) and not isinstance(order_id, bool):
            found = None
            if 0 < order_id < 2**62:
                try:
                    found = await self.numbers.id_of(order_id)
                except PyMongoError:  # the action's own retries wait out the outage
                    log.warning("could not look up order %d to order its actions", order_id)
            return ("order_id", order_id) if found is None else found
        return ("other", repr(id), repr(order_id))  # invalid: refused, never applied
