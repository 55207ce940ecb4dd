"""The retry policy both entry points share: storage outages are waited out with backoff,
never turned into a refusal, until the budget (`transient_retry_seconds`) is spent."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pymongo.errors import AutoReconnect, ConnectionFailure, PyMongoError

log = logging.getLogger("service.worker.delivery")
"""The courier's logger (service/worker/delivery.py): the "storage unavailable" lines sit
with the refusals and failures it logs."""

T = TypeVar("T")


class TransientExhausted(Exception):
    """MongoDB stayed unreachable for longer than the retry budget."""


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, AutoReconnect | ConnectionFailure):
        return True
    return isinstance(exc, PyMongoError) and exc.has_error_label("RetryableWriteError")


async def with_retries(work: Callable[[], Awaitable[T]], budget_seconds: float) -> T:
    """Run `work`, waiting out MongoDB outages with backoff for up to `budget_seconds`."""
    deadline = time.monotonic() + budget_seconds
    pause = 0.1
    while True:
        try:
            return await work()
        except PyMongoError as exc:
            if not is_transient(exc):
                raise
            if time.monotonic() + pause > deadline:
                raise TransientExhausted from exc
            log.warning("storage unavailable (%s); retrying in %.1fs", type(exc).__name__, pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 5.0)
