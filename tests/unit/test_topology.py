"""The queues' arguments, built in one place (service/topology.py, `quorum_arguments`)."""

from __future__ import annotations

from service.config import Settings
from service.topology import ACTION, PLACE, quorum_arguments, topology


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
    assert len(declared) == 1 + 3 + 6 + 8
