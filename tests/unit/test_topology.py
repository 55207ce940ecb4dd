"""The queues' arguments, built in one place (service/topology.py, `quorum_arguments`)."""

from __future__ import annotations

from service.bootstrap import retention_differs
from service.config import Settings
from service.topology import ACTION, PLACE, is_stream, quorum_arguments, topology


def test_work_queues_are_quorum_with_a_limit_and_at_least_once_dead_letters() -> None:
    names = topology(Settings(delivery_limit=7))
    assert names.queue(PLACE).arguments == {
        "x-queue-type": "quorum",
        "x-delivery-limit": 7,
        "x-dead-letter-exchange": "orders.dlx",
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }
    assert (names.queue(ACTION).arguments or {})["x-single-active-consumer"] is True
    assert "x-single-active-consumer" not in (names.queue(PLACE).arguments or {})


def test_a_bound_refuses_publishes() -> None:
    names = topology(Settings(queue_max_length=1000))
    arguments = names.queue(PLACE).arguments or {}
    assert (arguments["x-max-length"], arguments["x-overflow"]) == (1000, "reject-publish")
    assert quorum_arguments(max_length=5) == {"x-max-length": 5, "x-overflow": "reject-publish"}


def test_dead_letters_and_delay_queues() -> None:
    names = topology(Settings(retry_delays_ms=(1000, 5000)))
    assert names.dead_letter_queue.arguments == {"x-queue-type": "quorum"}
    delay = names.delay_queues()[1]
    assert delay.name == "orders.retry.2.5000ms"
    assert delay.arguments == {
        "x-queue-type": "quorum",
        "x-message-ttl": 5000,
        "x-dead-letter-exchange": "orders.requeue",
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


def test_a_partition_queue_dead_letters_under_the_routing_key_producers_use() -> None:
    queue = topology(Settings()).partition_queue(3)
    assert queue.name == "orders.action.3"
    assert queue.arguments == {
        "x-queue-type": "quorum",
        "x-delivery-limit": 20,
        "x-dead-letter-exchange": "orders.dlx",
        "x-dead-letter-routing-key": ACTION,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
        "x-single-active-consumer": True,
    }


def test_declarations_name_every_queue_with_its_bindings() -> None:
    declared = {d.queue.name: d.bindings for d in topology(Settings()).declarations()}
    assert declared["orders.dead"] == (("orders.dlx", "#"),)
    assert declared["orders.retry.1.1000ms"] == (("orders.retry", "r1_1000ms.#"),)
    assert declared[PLACE] == (("orders", PLACE), ("orders.requeue", f"*.{PLACE}"))
    assert declared["orders.action.7"] == (("orders.action.partitions", "7"),)
    assert declared["orders.events.history"] == (("orders.events", "#"),)
    assert len(declared) == 1 + 3 + 6 + 8 + 1


def test_the_history_is_a_stream_retained_by_age_and_size() -> None:
    names = topology(
        Settings(history_max_age="36h", history_max_bytes=5_000_000, history_segment_bytes=1000)
    )
    assert names.history.name == "orders.events.history"
    assert names.history.durable
    assert names.history.arguments == {
        "x-queue-type": "stream",
        "x-max-age": "36h",
        "x-max-length-bytes": 5_000_000,
        "x-stream-max-segment-size-bytes": 1000,
    }
    assert (topology(Settings()).history.arguments or {})["x-max-age"] == "7D"
    assert is_stream(names.history)
    assert not any(is_stream(d.queue) for d in names.declarations()[:-1])


def test_only_the_streams_retention_may_differ_from_the_declaration() -> None:
    names = topology(Settings())
    age = "inequivalent arg 'x-max-age' for queue 'orders.events.history': received '1D'"
    kind = "inequivalent arg 'x-queue-type' for queue 'orders.events.history'"
    assert retention_differs(names.history, age)
    assert not retention_differs(names.history, kind)
    assert not retention_differs(
        names.dead_letter_queue, age.replace("x-max-age", "x-max-length-bytes")
    )
