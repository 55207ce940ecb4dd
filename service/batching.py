"""Micro-batching: requests that arrive within a few milliseconds share one round trip.

Each caller still gets its own result (or exception) back, so every message keeps its own
reply and ack; only the storage and publishing work is done for the batch at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")

BatchHandler = Callable[[Sequence[In]], Awaitable[Sequence[Out | BaseException]]]


class MicroBatcher(Generic[In, Out]):
    """Collects submissions for at most `max_wait` seconds or `max_size` items, then hands
    them to `handler` together."""

    def __init__(self, handler: BatchHandler[In, Out], *, max_size: int, max_wait: float) -> None:
        self._handler = handler
        self._max_size = max_size
        self._max_wait = max_wait
        self._pending: list[tuple[In, asyncio.Future[Out]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._running: set[asyncio.Task[None]] = set()

    async def submit(self, item: In) -> Out:
        future: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if len(self._pending) >= self._max_size:
            self._dispatch()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._max_wait, self._dispatch)
        return await future

    def _dispatch(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending, []
        if batch:
            task = asyncio.create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, batch: list[tuple[In, asyncio.Future[Out]]]) -> None:
        try:
            results = await self._handler([item for item, _ in batch])
        except BaseException as exc:  # every caller sees the batch's failure as its own
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
