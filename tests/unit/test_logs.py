"""Log lines: JSON that parses, readable text, the message's ids on every line, no passwords."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from faststream.rabbit import RabbitBroker, TestRabbitBroker

from service.config import Settings
from service.logs import (
    FASTSTREAM_LOGGERS,
    configure_logging,
    current_log_context,
    log_context,
    redact,
)

LOG = logging.getLogger("service.test_logs")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """`configure_logging` changes process-wide state; put it back after each test."""
    names = ["", *FASTSTREAM_LOGGERS]
    saved = {
        name: (list(lg.handlers), lg.level, lg.propagate)
        for name in names
        for lg in [logging.getLogger(name)]
    }
    yield
    for name, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


def _fail(exc: Exception) -> None:
    raise exc


def _lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().out.splitlines()


def _json_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in _lines(capsys)]


def test_a_json_line_has_the_fields_and_the_extras(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", json_format=True)

    LOG.info("placed order %s", 12, extra={"order_id": 377239278, "id": 12, "event_id": "e-1"})

    [line] = _json_lines(capsys)
    assert line == {
        "ts": line["ts"],
        "level": "INFO",
        "logger": "service.test_logs",
        "message": "placed order 12",
        "order_id": 377239278,
        "id": 12,
        "event_id": "e-1",
    }
    assert line["ts"].endswith("Z")
    assert "T" in line["ts"]


def test_the_level_filters_and_unknown_extras_stay_out(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("warning", json_format=True)

    LOG.info("not shown")
    LOG.warning("shown", extra={"error_code": "not_found", "billing": {"email": "j@x.nl"}})

    [line] = _json_lines(capsys)
    assert line["message"] == "shown"
    assert line["error_code"] == "not_found"
    assert "billing" not in line


def test_an_exception_is_one_json_line_with_its_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", json_format=True)

    try:
        _fail(ValueError("boom"))
    except ValueError:
        LOG.exception("handler failed")

    [line] = _json_lines(capsys)
    assert line["level"] == "ERROR"
    assert line["message"] == "handler failed"
    assert "Traceback" in line["exception"]
    assert "ValueError: boom" in line["exception"]


def test_lines_inside_log_context_carry_the_message_ids(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", json_format=True)

    with log_context(correlation_id="corr-1", message_id="msg-1", routing_key="orders.place"):
        LOG.info("inside")
        with log_context(order_id=42, error_code=None):
            LOG.info("nested")
        LOG.info("explicit wins", extra={"routing_key": "orders.action"})
    LOG.info("outside")

    inside, nested, explicit, outside = _json_lines(capsys)
    ids = {"correlation_id": "corr-1", "message_id": "msg-1", "routing_key": "orders.place"}
    assert inside.items() >= ids.items()
    assert nested.items() >= {**ids, "order_id": 42}.items()
    assert "error_code" not in nested
    assert explicit["routing_key"] == "orders.action"
    assert explicit["correlation_id"] == "corr-1"
    assert not {"correlation_id", "message_id", "routing_key"} & outside.keys()
    assert current_log_context() == {}


async def test_concurrent_handlers_keep_their_own_context(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", json_format=True)
    first_inside = asyncio.Event()
    second_logged = asyncio.Event()

    async def first() -> None:
        with log_context(correlation_id="first"):
            first_inside.set()
            await second_logged.wait()  # the other task logs while this context is open
            LOG.info("from first")

    async def second() -> None:
        await first_inside.wait()
        with log_context(correlation_id="second"):
            LOG.info("from second")
        second_logged.set()

    await asyncio.wait_for(asyncio.gather(first(), second()), timeout=5)

    by_message = {line["message"]: line["correlation_id"] for line in _json_lines(capsys)}
    assert by_message == {"from first": "first", "from second": "second"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("amqp://guest:guest@127.0.0.1:5672/", "amqp://guest:***@127.0.0.1:5672/"),
        (
            "mongodb+srv://app:s3cr%40t@db.example.com/orders?replicaSet=rs0",
            "mongodb+srv://app:***@db.example.com/orders?replicaSet=rs0",
        ),
        ("redis://:token@cache:6379/0", "redis://:***@cache:6379/0"),
        (
            "from amqp://a:b@h1/ and mongodb://c:d@h2,h3/ both",
            "from amqp://a:***@h1/ and mongodb://c:***@h2,h3/ both",
        ),
        ("amqp://worker@rabbit/", "amqp://worker@rabbit/"),
        ("http://host:8080/path", "http://host:8080/path"),
        ("mail john.doe@example.com at 10:30", "mail john.doe@example.com at 10:30"),
    ],
)
def test_redact_masks_url_passwords_only(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize("json_format", [True, False])
def test_credentials_never_reach_a_line(
    capsys: pytest.CaptureFixture[str], json_format: bool
) -> None:
    configure_logging("INFO", json_format=json_format)

    LOG.warning("cannot connect to %s", "amqp://orders-worker:hunter2@rabbit:5672/")
    try:
        _fail(ConnectionError("mongodb://app:hunter2@db:27017/ unreachable"))
    except ConnectionError:
        LOG.exception("storage down")

    out = capsys.readouterr().out
    assert "hunter2" not in out
    assert "amqp://orders-worker:***@rabbit:5672/" in out
    assert "mongodb://app:***@db:27017/" in out


def test_the_text_line_is_readable(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", json_format=False)

    with log_context(correlation_id="corr-1", routing_key="orders.action"):
        LOG.info("refused: %s", "invalid_transition", extra={"error_code": "invalid_transition"})
        LOG.info("odd value", extra={"event_id": "has space"})

    first, second = _lines(capsys)
    ts, level, logger, rest = first.split(" ", 3)
    assert ts.endswith("Z")
    assert (level, logger) == ("INFO", "service.test_logs")
    assert rest == (
        "refused: invalid_transition "
        "correlation_id=corr-1 routing_key=orders.action error_code=invalid_transition"
    )
    assert second.endswith(
        'odd value correlation_id=corr-1 routing_key=orders.action event_id="has space"'
    )


def test_configuring_again_replaces_the_handler(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", json_format=False)
    configure_logging("INFO", json_format=True)

    LOG.info("once")

    [line] = _json_lines(capsys)
    assert line["message"] == "once"


async def test_faststream_lines_are_written_once_in_our_format(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", json_format=True)
    broker = RabbitBroker("amqp://guest:guest@127.0.0.1:5672/", log_level=logging.INFO)
    handled = asyncio.Event()

    @broker.subscriber("orders.statuses")
    async def on_message(body: str) -> None:
        handled.set()

    # The broker creates its access logger when it starts; FastStream must not add its own
    # (coloured, duplicate) handler next to ours.
    async with TestRabbitBroker(broker) as started:
        await started.publish("{}", queue="orders.statuses")
        await asyncio.wait_for(handled.wait(), timeout=5)
    logging.getLogger("faststream.access.rabbit").info("access line")
    logging.getLogger("faststream").info("app line")

    lines = _json_lines(capsys)  # every line is ours: FastStream's format would not parse
    written = [(line["logger"], line["message"]) for line in lines]
    assert written.count(("faststream.access.rabbit", "access line")) == 1
    assert written.count(("faststream", "app line")) == 1


def test_log_json_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ORDERS_LOG_JSON", raising=False)
    assert Settings().log_json is False
    monkeypatch.setenv("ORDERS_LOG_JSON", "true")
    assert Settings().log_json is True
