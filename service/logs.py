"""Logging: one line per record, plain text for humans or JSON for machines.

`configure_logging` installs one handler on the root logger and routes FastStream's own
loggers through it. Every line carries the ids of the message being handled: wrap the
handling in `log_context(correlation_id=..., message_id=..., routing_key=...)` and
`ContextFilter` copies them onto each record written inside it. `RedactingFilter` masks the
password of any `scheme://user:password@` URL before a line is written.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, TextIO

EXTRA_FIELDS = (
    "correlation_id",
    "message_id",
    "routing_key",
    "order_id",
    "id",
    "event_id",
    "error_code",
    "queue",
    "exchange",
)
"""Record attributes written after the message when set (FastStream adds queue/exchange)."""

FASTSTREAM_LOGGERS = ("faststream", "faststream.access.rabbit")
"""The app logger and the broker's access logger, both created by FastStream itself."""

LogValue = str | int | None

_context: ContextVar[Mapping[str, LogValue]] = ContextVar(
    "log_context", default=MappingProxyType({})
)

_CREDENTIALS = re.compile(
    r"(?P<prefix>[A-Za-z][A-Za-z0-9+.\-]{0,31}://[^:/?#@\s]{0,256}):[^@\s]{0,1024}@"
)
"""Bounded repetitions: linear time on any text (an unbounded scheme was quadratic)."""


@contextlib.contextmanager
def log_context(**fields: LogValue) -> Iterator[None]:
    """Attach fields (`None` ones are skipped) to every record logged inside the block.

    Backed by a `ContextVar`, so concurrent handlers on one event loop never mix them up.
    """
    token = _context.set(
        {**_context.get(), **{key: value for key, value in fields.items() if value is not None}}
    )
    try:
        yield
    finally:
        _context.reset(token)


def current_log_context() -> Mapping[str, LogValue]:
    """The fields `log_context` has set for the running task."""
    return _context.get()


def redact(text: str) -> str:
    """`amqp://user:secret@host` -> `amqp://user:***@host`, anywhere in the text."""
    if "://" not in text:
        return text
    return _CREDENTIALS.sub(r"\g<prefix>:***@", text)


class ContextFilter(logging.Filter):
    """Copies the `log_context` fields onto each record that does not carry them already."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if getattr(record, key, None) in (None, ""):
                setattr(record, key, value)
        return True


class RedactingFilter(logging.Filter):
    """Masks URL passwords in the message and in the exception text of each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return True  # a bad format string: the handler reports it, as it would anyway
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    extras: dict[str, Any] = {}
    for key in EXTRA_FIELDS:
        value = getattr(record, key, None)
        if value is None or value == "":
            continue
        extras[key] = value if isinstance(value, str | int | float | bool) else str(value)
    return extras


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, the extras, exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_extras(record),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """`2026-11-27T07:04:13.888Z INFO service.x message key=value ...`, then any traceback."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [_timestamp(record), record.levelname, record.name, record.getMessage()]
        parts.extend(f"{key}={_text_value(value)}" for key, value in _extras(record).items())
        line = " ".join(parts)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line = f"{line}\n{record.exc_text}"
        if record.stack_info:
            line = f"{line}\n{self.formatStack(record.stack_info)}"
        return line


def _text_value(value: object) -> str:
    text = str(value)
    if not text or any(char.isspace() or char in "\"'=" for char in text):
        return json.dumps(text, ensure_ascii=False)
    return text


class _StdoutHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever `sys.stdout` is at the time (test capture included).

    FastStream adds its own stdout handler to a logger it creates unless one is there
    already, so this one being a stdout handler is also what keeps lines from doubling.
    """

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property
    def stream(self) -> TextIO:
        return sys.stdout

    @stream.setter
    def stream(self, _: TextIO) -> None:
        """The stream is always the current `sys.stdout`."""


def configure_logging(level: str, json_format: bool) -> None:
    """Root and FastStream loggers write through one stdout handler; idempotent."""
    handler = _StdoutHandler()
    handler.setFormatter(JsonFormatter() if json_format else TextFormatter())
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactingFilter())

    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StdoutHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())

    # FastStream's loggers do not propagate and bring their own coloured handlers; give
    # them ours instead. The access logger may not exist yet: FastStream then finds our
    # stdout handler on it and adds none of its own.
    for name in FASTSTREAM_LOGGERS:
        logger = logging.getLogger(name)
        for theirs in [h for h in logger.handlers if isinstance(h, logging.StreamHandler)]:
            logger.removeHandler(theirs)
        logger.addHandler(handler)
        logger.propagate = False
    logging.getLogger("faststream").setLevel(level.upper())
