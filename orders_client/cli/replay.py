"""What `watch --since` and `history` share: reading `--since`, and the progress bar shown
on stderr while the history is replayed."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from orders_client.cli.errors import CliError
from orders_client.cli.render import err
from orders_client.events import EventStream, Since

_DURATION = re.compile(r"(\d{1,9})([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
REFRESH_SECONDS = 0.1


def parse_since(text: str) -> Since:
    """`first`, `last`, `next`; a duration before now (`90s`, `15m`, `2h`, `7d`, `1w`); an ISO
    8601 timestamp (`2026-12-06T18:00:00Z`; without a zone, UTC); or a stream offset (`4711`)."""
    text = text.strip()
    if text in ("first", "last", "next"):
        return text  # type: ignore[return-value]
    if text.isdigit():
        return int(text)
    duration = _DURATION.fullmatch(text)
    if duration:
        return timedelta(**{_UNITS[duration.group(2)]: int(duration.group(1))})
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise CliError(
            f"--since {text!r}: expected first, a duration (2h, 30m, 7d), an ISO timestamp "
            "or a stream offset"
        ) from None


@contextlib.asynccontextmanager
async def replay_progress(events: EventStream, *, then: str | None = None) -> AsyncIterator[None]:
    """While `events` replays the history: a progress bar (offsets read of those in the stream
    when the read began) on stderr when it is a terminal; once caught up, `then` is said."""
    progress = Progress(
        TextColumn("replaying the history"),
        BarColumn(),
        MofNCompleteColumn(),
        console=err,
        transient=True,
        redirect_stdout=sys.stdout.isatty() and err.is_terminal,
        redirect_stderr=False,
    )
    task = progress.add_task("replay", total=None)

    async def follow() -> None:
        with progress if err.is_terminal else contextlib.nullcontext():
            while not events.caught_up:
                if events.first is not None and events.tail is not None:
                    progress.update(
                        task,
                        total=events.tail - events.first + 1,
                        completed=(events.position or events.first) - events.first + 1,
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(events.replayed(), REFRESH_SECONDS)
        if then:
            err.print(then, markup=False, highlight=False)

    if events.since is None:  # live: nothing to replay
        yield
        return
    follower = asyncio.create_task(follow())
    try:
        yield
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
        if err.is_terminal:
            progress.stop()
