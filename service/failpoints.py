"""Fault injection for the reliability tests: the worker kills itself at a named point.

Enabled only through `ORDERS_FAILPOINTS`; empty (the default) costs one set lookup.
"""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger(__name__)

CRASH_BEFORE_PUBLISH = "crash-before-publish"
"""After a change and its outbox entry are committed, before the event is published."""

KNOWN = frozenset({CRASH_BEFORE_PUBLISH})


class Failpoints:
    def __init__(self, enabled: frozenset[str] = frozenset()) -> None:
        unknown = enabled - KNOWN
        if unknown:
            raise ValueError(f"unknown failpoints: {sorted(unknown)}")
        self._enabled = enabled

    def crash_if(self, name: str) -> None:
        if name in self._enabled:
            log.critical("failpoint %s: killing the worker with SIGKILL", name)
            os.kill(os.getpid(), signal.SIGKILL)
