"""MicroBatcher: who goes in which batch, and every caller gets its own outcome."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from service.batching import MicroBatcher


class Recorder:
    """A batch handler that records its batches and can be held open."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self, items: Sequence[int]) -> list[int | BaseException]:
        self.batches.append(list(items))
        await self.release.wait()
        return [ValueError(f"odd {i}") if i % 2 else i * 10 for i in items]


async def test_what_arrives_within_the_wait_is_one_batch_and_each_caller_gets_its_own_result() -> (
    None
):
    handler = Recorder()
    batcher = MicroBatcher(handler, max_size=100, max_wait=0.01)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(6)), return_exceptions=True)
    assert handler.batches == [[0, 1, 2, 3, 4, 5]]
    assert [r if isinstance(r, int) else str(r) for r in results] == [
        0,
        "odd 1",
        20,
        "odd 3",
        40,
        "odd 5",
    ]


async def test_full_batches_go_at_once_and_the_rest_after_the_wait() -> None:
    handler = Recorder()
    batcher = MicroBatcher(handler, max_size=4, max_wait=0.2)
    submitted = [asyncio.ensure_future(batcher.submit(i * 2)) for i in range(9)]
    await asyncio.sleep(0.05)
    assert handler.batches == [[0, 2, 4, 6], [8, 10, 12, 14]]
    assert await asyncio.wait_for(asyncio.gather(*submitted), timeout=1.0) == [
        i * 20 for i in range(9)
    ]
    assert handler.batches[2:] == [[16]]


async def test_while_batches_run_arrivals_wait_and_go_together_as_the_next_batch() -> None:
    handler = Recorder()
    handler.release.clear()
    batcher = MicroBatcher(handler, max_size=100, max_wait=0.001, max_in_flight=1)
    first = asyncio.ensure_future(batcher.submit(0))
    await asyncio.sleep(0.01)
    assert handler.batches == [[0]]
    later = [asyncio.ensure_future(batcher.submit(i)) for i in (2, 4, 6)]
    await asyncio.sleep(0.02)  # well past max_wait: they still wait for the running batch
    assert handler.batches == [[0]]
    handler.release.set()
    assert await first == 0
    assert await asyncio.gather(*later) == [20, 40, 60]
    assert handler.batches == [[0], [2, 4, 6]]


async def test_a_failing_batch_fails_every_caller_in_it_and_the_batcher_goes_on() -> None:
    calls = 0

    async def flaky(items: Sequence[int]) -> list[int | BaseException]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("down")
        return list(items)

    batcher = MicroBatcher(flaky, max_size=10, max_wait=0.001)
    failed = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in failed)
    assert await batcher.submit(7) == 7


@pytest.mark.parametrize("in_flight", [1, 2, 3])
async def test_no_more_than_max_in_flight_batches_run_at_once(in_flight: int) -> None:
    running = peak = 0

    async def slow(items: Sequence[int]) -> list[int | BaseException]:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.005)
        running -= 1
        return list(items)

    batcher = MicroBatcher(slow, max_size=2, max_wait=0.001, max_in_flight=in_flight)
    assert await asyncio.gather(*(batcher.submit(i) for i in range(40))) == list(range(40))
    assert peak == in_flight
