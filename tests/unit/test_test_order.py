"""The suite's own ordering: the tests that restart the shared RabbitMQ run last."""

from __future__ import annotations

import pytest

from tests.conftest import RESTARTS_BROKER, broker_restarts_last


class Collected:
    """What the ordering reads of a collected test: its name and its markers."""

    def __init__(self, name: str, *markers: str) -> None:
        self.name = name
        self._markers = {marker: getattr(pytest.mark, marker) for marker in markers}

    def get_closest_marker(self, name: str) -> pytest.MarkDecorator | None:
        return self._markers.get(name)


def _names(items: list[pytest.Item]) -> list[str]:
    return [item.name for item in items]


def test_marked_tests_move_to_the_end_in_their_own_order() -> None:
    items = [
        Collected("a"),
        Collected("restart_1", RESTARTS_BROKER),
        Collected("b", "timeout"),
        Collected("restart_2", RESTARTS_BROKER),
        Collected("c"),
    ]

    ordered = broker_restarts_last(items)  # type: ignore[arg-type]

    assert _names(ordered) == ["a", "b", "c", "restart_1", "restart_2"]


def test_without_marked_tests_the_order_is_kept() -> None:
    items = [Collected("b"), Collected("a"), Collected("c")]

    assert _names(broker_restarts_last(items)) == ["b", "a", "c"]  # type: ignore[arg-type]


def test_the_broker_restart_module_is_marked() -> None:
    from tests.e2e import test_broker_restart

    assert test_broker_restart.pytestmark.name == RESTARTS_BROKER
