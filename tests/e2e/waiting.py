"""Waiting on a condition the tests cannot be told about: poll it, bounded."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


async def eventually(
    check: Callable[[], Awaitable[bool]],
    *,
    timeout: float = 60.0,  # noqa: ASYNC109
    what: str = "condition",
) -> None:
    """Poll an async check until it returns True; fail after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        await asyncio.sleep(0.2)
