"""How the client reads the event history: topic matching as RabbitMQ does it, where a read
starts (`x-stream-offset`), what an event says about its order, and the CLI's `--since`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orders_client.cli.errors import CliError
from orders_client.cli.replay import parse_since
from orders_client.events import offset_argument, order_refs, topic_matches
from schemas import OrderCommandRejected, OrderMetadataUpdated, OrderPlaced, OrderStatusChanged
from schemas.orders import ORDER_EXAMPLE


@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [
        ("order.#", "order.placed", True),
        ("order.#", "order", True),
        ("order.#", "orders.placed", False),
        ("#", "order.status_changed", True),
        ("#", "", True),
        ("order.*", "order.placed", True),
        ("order.*", "order.placed.again", False),
        ("*.placed", "order.placed", True),
        ("order.status_changed", "order.status_changed", True),
        ("order.status_changed", "order.placed", False),
        ("#.changed", "order.status.changed", True),
        ("order.#.changed", "order.changed", True),
        ("order.#.changed", "order.a.b.changed", True),
        ("order.#.changed", "order.a.b.placed", False),
    ],
)
def test_topic_patterns_match_as_rabbitmq_matches_them(
    pattern: str, key: str, matches: bool
) -> None:
    assert topic_matches(pattern, key) is matches


def test_where_a_read_starts() -> None:
    assert offset_argument("first") == "first"
    assert offset_argument(4711) == 4711
    moment = datetime(2026, 12, 6, 18, 0, tzinfo=UTC)
    assert offset_argument(moment) == moment
    assert offset_argument(moment.replace(tzinfo=None)) == moment  # naive: UTC
    before = offset_argument(timedelta(hours=2))
    assert isinstance(before, datetime)
    assert abs((datetime.now(UTC) - before) - timedelta(hours=2)) < timedelta(seconds=5)
    for wrong in (-1, True, "yesterday"):
        with pytest.raises(ValueError, match=r"offset|since"):
            offset_argument(wrong)  # type: ignore[arg-type]


def test_what_an_event_says_about_its_order() -> None:
    placed = OrderPlaced.model_validate(
        {"event_id": "e1", "occurred_at": "2026-12-06T18:00:00Z", "order": ORDER_EXAMPLE}
    )
    assert order_refs(placed) == (
        ORDER_EXAMPLE["id"],
        ORDER_EXAMPLE["order_id"],
        ORDER_EXAMPLE["customer_id"],
    )
    common = {"event_id": "e2", "occurred_at": "2026-12-06T18:00:00Z", "id": 3, "order_id": 9}
    changed = OrderStatusChanged.model_validate(
        common
        | {
            "customer_id": "C",
            "user_id": None,
            "from_status": "pending",
            "to_status": "confirmed",
            "action": "update_status",
            "notes": None,
            "reason": None,
            "version": 2,
        }
    )
    assert order_refs(changed) == (3, 9, "C")
    tagged = OrderMetadataUpdated.model_validate(common | {"metadata": {}, "version": 3})
    assert order_refs(tagged) == (3, 9, None)  # a metadata update names no customer
    rejected = OrderCommandRejected.model_validate(
        {
            "event_id": "e3",
            "occurred_at": "2026-12-06T18:00:00Z",
            "routing_key": "orders.action",
            "error": {"code": "invalid_transition", "message": "no"},
            "payload": {"id": 3, "action": "cancel"},
        }
    )
    assert order_refs(rejected) == (3, None, None)
    text = rejected.model_copy(update={"payload": "not json"})
    assert order_refs(text) == (None, None, None)


def test_since_on_the_command_line() -> None:
    assert parse_since("first") == "first"
    assert parse_since("4711") == 4711
    assert parse_since("2h") == timedelta(hours=2)
    assert parse_since("30m") == timedelta(minutes=30)
    assert parse_since("7d") == timedelta(days=7)
    assert parse_since("2026-12-06T18:00:00Z") == datetime(2026, 12, 6, 18, 0, tzinfo=UTC)
    with pytest.raises(CliError, match="--since 'soon'"):
        parse_since("soon")
