"""The committed OpenAPI document (docs/openapi.json) is the one the HTTP gateway serves at
/openapi.json, as `make docs-gen` writes it."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from devtools.catalogue import OPENAPI_DOCUMENT, dumps, openapi_document
from service.logs import FASTSTREAM_LOGGERS

Json = dict[str, Any]

OPERATIONS = {
    ("post", "/api/orders/place"),
    ("get", "/api/orders/{id}"),
    ("post", "/api/orders/{id}/action"),
    ("get", "/api/orders/list"),
    ("get", "/api/orders/stats"),
    ("get", "/api/orders/stats/overview"),
    ("get", "/api/orders/meta/statuses"),
    ("get", "/api/orders/statuses/available"),
}


@pytest.fixture(scope="module")
def generated() -> Iterator[Json]:
    """Building the app configures the process's logging: put it back afterwards."""
    names = ["", *FASTSTREAM_LOGGERS]
    saved = {
        name: (list(lg.handlers), lg.level, lg.propagate)
        for name in names
        for lg in [logging.getLogger(name)]
    }
    try:
        yield openapi_document()
    finally:
        for name, (handlers, level, propagate) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.propagate = propagate


def test_committed_document_is_what_the_code_generates(generated: Json) -> None:
    assert OPENAPI_DOCUMENT.exists(), f"{OPENAPI_DOCUMENT} is missing: run `make docs-gen`"
    assert OPENAPI_DOCUMENT.read_text(encoding="utf-8") == dumps(generated), (
        f"{OPENAPI_DOCUMENT} is out of date with the code: run `make docs-gen` and commit it"
    )


def test_generation_is_stable(generated: Json) -> None:
    """Sorted keys, two-space indent, one final newline; the same text twice."""
    text = dumps(generated)
    assert text.endswith("}\n")
    assert not text.endswith("\n\n")
    assert dumps(json.loads(text)) == text
    assert dumps(openapi_document()) == text


def test_document_names_every_route_and_no_local_address(generated: Json) -> None:
    assert generated["openapi"].startswith("3.")
    documented = {
        (method, path) for path, methods in generated["paths"].items() for method in methods
    }
    assert documented == OPERATIONS
    text = OPENAPI_DOCUMENT.read_text(encoding="utf-8")
    for leak in ("guest", "127.0.0.1", "localhost", "amqp://", "mongodb://"):
        assert leak not in text, f"{OPENAPI_DOCUMENT} names {leak!r}"
