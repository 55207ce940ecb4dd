"""Fault injection for the reliability tests: the worker kills itself at a named point, or a
handler fails unexpectedly on the messages marked for it.

Enabled only through `ORDERS_FAILPOINTS`; empty (the default) costs one set lookup.
"""

from __future__ import annotations

import logging
import os
import re
import signal

log = logging.getLogger(__name__)

CRASH_BEFORE_PUBLISH = "crash-before-publish"
"""After a change and its event are committed, before the events feed publishes the event
(it publishes it again after the restart)."""

FAIL_HANDLER = "fail-handler"
"""A handler raises `InjectedFault` on a message whose body contains `failpoint:fail-handler`
(every attempt) or `failpoint:fail-handler:N` (its first N attempts in this process, counted
by `message_id`), for example in an order's `notes`."""

KNOWN = frozenset({CRASH_BEFORE_PUBLISH, FAIL_HANDLER})

_MARK = re.compile(rb"failpoint:fail-handler(?::(\d{1,4}))?")
_REMEMBERED = 10_000


class InjectedFault(RuntimeError):
    """The unexpected failure the `fail-handler` failpoint injects."""


class Failpoints:
    def __init__(self, enabled: frozenset[str] = frozenset()) -> None:
        unknown = enabled - KNOWN
        if unknown:
            raise ValueError(f"unknown failpoints: {sorted(unknown)}")
        self._enabled = enabled
        self._failures: dict[str, int] = {}

    def crash_if(self, name: str) -> None:
        if name in self._enabled:
            log.critical("failpoint %s: killing the worker with SIGKILL", name)
            os.kill(os.getpid(), signal.SIGKILL)

    def fail_if_marked(self, body: bytes, message_id: str) -> None:
        """Raise `InjectedFault` when `fail-handler` is enabled and `body` asks for it."""
        if FAIL_HANDLER not in self._enabled:
            return
        mark = _MARK.search(body)
        if mark is None:
            return
        failed = self._failures.get(message_id, 0)
        if mark.group(1) is not None and failed >= int(mark.group(1)):
            return
        if len(self._failures) >= _REMEMBERED:
            self._failures.clear()
        self._failures[message_id] = failed + 1
        raise InjectedFault(f"failpoint {FAIL_HANDLER}: failure {failed + 1}")
