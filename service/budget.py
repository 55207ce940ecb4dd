"""A bound on the bytes of the requests being worked on at once.

Prefetch bounds how many messages a worker holds, not how large they are: 32 bodies of
256 KiB, each parsed into objects of about ten times its size and then copied into the
order, its event and its reply, would take hundreds of megabytes at once. The budget lets
a request start only while the bodies already being worked on leave room for its own;
small requests never wait on each other, and one larger than the whole budget still runs,
alone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator


class ByteBudget:
    """A weighted semaphore over bytes, first come first served: a large request waiting
    is not overtaken by smaller ones, so it cannot starve (and per-order delivery order,
    which decides who asks first, is kept)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.free = capacity
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    @contextlib.asynccontextmanager
    async def hold(self, size: int) -> AsyncIterator[None]:
        size = max(0, min(size, self.capacity))
        if not self._waiting and self.free >= size:
            self.free -= size
        else:
            turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            entry = (size, turn)
            self._waiting.append(entry)
            try:
                await turn
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():
                    self.free += size  # granted just as it was cancelled: give it back
                else:
                    self._waiting.remove(entry)
                self._grant()
                raise
        try:
            yield
        finally:
            self.free += size
            self._grant()

    def _grant(self) -> None:
        while self._waiting and self._waiting[0][0] <= self.free:
            size, turn = self._waiting.popleft()
            if turn.done():
                continue
            self.free -= size
            turn.set_result(None)
