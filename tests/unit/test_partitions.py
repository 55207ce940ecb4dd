"""Which partition an action goes to, and which worker applies each partition
(service/worker/partitions.py)."""

from __future__ import annotations

from collections import Counter

from service.store.membership import Member
from service.worker.partitions import HANDOVER_COOLDOWN_SECONDS, Ownership, partition_of


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_consecutive_orders_take_turns_over_the_partitions() -> None:
    assert [partition_of(id, 4) for id in range(1, 9)] == [1, 2, 3, 0, 1, 2, 3, 0]


def test_an_unknown_order_number_has_a_stable_partition() -> None:
    key = ("order_id", 421409)
    assert partition_of(key, 8) == partition_of(("order_id", 421409), 8)
    assert 0 <= partition_of(key, 8) < 8


def test_live_workers_share_the_partitions_evenly_and_agree() -> None:
    live = [Member("b", 8), Member("a", 8), Member("c", 8)]
    views = {name: Ownership(name, 8, lease_seconds=6, clock=Clock()) for name in "abc"}
    for view in views.values():
        view.update(live)

    owners = [views["a"].owner(n) for n in range(8)]
    assert all(view.owner(n) == owners[n] for view in views.values() for n in range(8))
    assert Counter(owners) == {"a": 3, "b": 3, "c": 2}
    assert views["b"].mine() == [n for n in range(8) if owners[n] == "b"]


def test_workers_configured_with_another_partition_count_get_no_share() -> None:
    view = Ownership("a", 4, lease_seconds=6, clock=Clock())
    view.update([Member("a", 4), Member("b", 8)])
    assert view.mine() == [0, 1, 2, 3]


def test_a_worker_not_yet_listed_counts_itself() -> None:
    view = Ownership("b", 2, lease_seconds=6, clock=Clock())
    view.update([Member("a", 2)])
    assert [view.owner(n) for n in range(2)] == ["a", "b"]


def test_a_partition_is_handed_over_to_its_owner_at_most_once_per_cool_down() -> None:
    clock = Clock()
    view = Ownership("a", 2, lease_seconds=6, clock=clock)
    view.update([Member("a", 2), Member("b", 2)])

    assert not view.should_hand_over(0)  # mine
    assert view.should_hand_over(1)  # b's
    clock.now += 1
    view.update([Member("a", 2), Member("b", 2)])
    assert not view.should_hand_over(1)  # just handed over: b may have died meanwhile
    clock.now += HANDOVER_COOLDOWN_SECONDS
    view.update([Member("a", 2), Member("b", 2)])
    assert view.should_hand_over(1)


def test_nothing_is_handed_over_on_a_view_older_than_the_lease() -> None:
    clock = Clock()
    view = Ownership("a", 2, lease_seconds=6, clock=clock)
    view.update([Member("a", 2), Member("b", 2)])
    clock.now += 7  # MongoDB unreachable since: who is alive is not known
    assert view.owner(1) is None
    assert not view.should_hand_over(1)
