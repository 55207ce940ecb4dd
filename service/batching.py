"""Micro-batching: requests that arrive within a few milliseconds share one round trip.

Each caller still gets its own result (or exception) back, so every message keeps its own
reply and ack; only the storage and publishing work is done for the batch at once.

At most `max_in_flight` batches run at a time; what arrives meanwhile waits for one of them
to finish and then goes as the next batch (group commit). So batches are small when the
worker is idle and grow with the load, and round trips stop growing with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")

BatchHandler = Callable[[Sequence[In]], Awaitable[Sequence[Out | BaseException]]]


class MicroBatcher(Generic[In, Out]):
    """Collects submissions for at most `max_wait` seconds or `max_size` items (longer while
    `max_in_flight` batches are running), then hands them to `handler` together."""

    def __init__(
        self,
        handler: BatchHandler[In, Out],
        *,
        max_size: int,
        max_wait: float,
        max_in_flight: int = 2,
    ) -> None:
        self._handler = handler
        self._max_size = max_size
        self._max_wait = max_wait
        self._max_in_flight = max_in_flight
        self._pending: list[tuple[In, asyncio.Future[Out]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._running: set[asyncio.Task[None]] = set()

    async def submit(self, item: In) -> Out:
        future: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if len(self._pending) >= self._max_size and len(self._running) < self._max_in_flight:
            self._dispatch()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._max_wait, self._on_timer)
        return await future

    def _on_timer(self) -> None:
        self._timer = None
        if len(self._running) < self._max_in_flight:
            self._dispatch()
        # else the next batch to finish dispatches what waits

    def _dispatch(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending[: self._max_size], self._pending[self._max_size :]
        if batch:
            task = asyncio.create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._finished)
        if self._pending and len(self._running) < self._max_in_flight:
            self._dispatch()  # more than one full batch was waiting

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if self._pending and self._timer is None:
            self._dispatch()  # it waited for this batch already

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
