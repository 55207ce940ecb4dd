"""The ledger: what was asked for, what MongoDB holds, and which events came out.

Pure: built from the workload, what the producer published, the order documents and the
events recorded; no I/O here.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from typing import Any

from devtools.chaos_amqp import CHANGE_EVENTS, DeadLetter, SeenEvent
from devtools.chaos_workload import ACTION, PLACE, PlannedOrder, Workload

Document = Mapping[str, Any]
SAMPLES = 20


@dataclass
class Ledger:
    messages: int = 0
    commands_published: dict[str, int] = field(default_factory=dict)
    republished: int = 0
    publish_retries: int = 0
    orders_stored: int = 0
    placements_expected: int = 0
    placements_stored: int = 0
    placements_missing: int = 0
    placements_doubled: int = 0
    orders_unplanned: int = 0
    transitions_expected: int = 0
    transitions_applied: int = 0
    transitions_missing: int = 0
    transitions_unexpected: int = 0
    metadata_updates_expected: int = 0
    metadata_updates_applied: int = 0
    metadata_updates_missing: int = 0
    metadata_updates_unexpected: int = 0
    events_delivered: int = 0
    events_unique: int = 0
    duplicates_delivered: int = 0
    events_by_type: dict[str, int] = field(default_factory=dict)
    events_expected: int = 0
    """Committed changes: one per order version (placing, transitions, metadata updates)."""
    events_matched: int = 0
    changes_without_event: int = 0
    changes_with_several_events: int = 0
    events_without_change: int = 0
    orders_with_events_out_of_order: int = 0
    actions_without_event: int = 0
    """Published actions no change event points back to (by correlation id)."""
    actions_dead_lettered: int = 0
    actions_absorbed: int = 0
    """Actions without a change event and without a dead letter: accepted, yet no effect."""
    actions_applied_twice: int = 0
    """Actions that more than one change (unique event) points back to."""
    commands_rejected: int = 0
    dead_lettered: int = 0
    dead_letters_by_reason: dict[str, int] = field(default_factory=dict)
    chains_failed: int = 0
    chains_unstarted: int = 0
    ids_from_database: int = 0
    events_unpublished: int = 0
    worker_exits_unexpected: int = 0
    broker_outages_not_injected: int = 0
    """The shared broker went away outside this run's faults (someone else restarted it)."""
    """Workers that exited on their own (crashed); the harness restarted them."""
    load_completed: bool = True
    quiescent: bool = False

    @property
    def lost(self) -> int:
        """Commands whose effect is missing, plus committed changes without an event."""
        return (
            self.placements_missing
            + self.transitions_missing
            + self.metadata_updates_missing
            + self.changes_without_event
        )

    @property
    def doubled(self) -> int:
        """Effects applied more often than commanded: orders placed twice, updates repeated.

        Transitions outside the commanded order are not counted here: a status history can
        not tell a repeated transition from a reordered one. They fail the chain instead.
        """
        return (
            self.placements_doubled
            + self.orders_unplanned
            + self.metadata_updates_unexpected
            + self.actions_applied_twice
        )

    def failures(self) -> list[str]:
        """Why the run failed; empty when every guarantee held."""
        checks = {
            "lost > 0": self.lost > 0,
            "an order was placed twice or an update applied twice": self.doubled > 0,
            "a change has more than one unique event": self.changes_with_several_events > 0,
            "an event without a committed change": self.events_without_change > 0,
            "a chain ended differently from what was commanded": self.chains_failed > 0,
            "a chain could not be published (order id never learned)": self.chains_unstarted > 0,
            "a worker exited on its own": self.worker_exits_unexpected > 0,
            "the load stalled and was given up": not self.load_completed,
            "not quiescent within the time limit": not self.quiescent,
            "events committed and not published": self.events_unpublished > 0,
        }
        return [reason for reason, failed in checks.items() if failed]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"lost": self.lost, "doubled": self.doubled}

    def rows(self) -> list[tuple[str, str, str]]:
        """(what, measured, expected) for the printed table."""
        published = self.commands_published
        return [
            ("messages in the workload", f"{self.messages}", ""),
            ("commands published: orders.place", f"{published.get(PLACE, 0)}", ""),
            ("commands published: orders.action", f"{published.get(ACTION, 0)}", ""),
            ("republished (confirm failed; messages / tries)",
             f"{self.republished} / {self.publish_retries}", ""),
            ("orders stored", f"{self.orders_stored}", f"{self.placements_expected}"),
            ("placements stored (by idempotency key)", f"{self.placements_stored}",
             f"{self.placements_expected}"),
            ("placements missing (lost)", f"{self.placements_missing}", "0"),
            ("placements doubled", f"{self.placements_doubled}", "0"),
            ("orders not in the workload", f"{self.orders_unplanned}", "0"),
            ("transitions applied", f"{self.transitions_applied}", f"{self.transitions_expected}"),
            ("transitions missing / not in the commanded order",
             f"{self.transitions_missing} / {self.transitions_unexpected}", "0 / 0"),
            ("metadata updates applied", f"{self.metadata_updates_applied}",
             f"{self.metadata_updates_expected}"),
            ("metadata updates missing / unexpected",
             f"{self.metadata_updates_missing} / {self.metadata_updates_unexpected}", "0 / 0"),
            ("events received (deliveries)", f"{self.events_delivered}", ""),
            ("unique event_ids", f"{self.events_unique}", ""),
            ("duplicates delivered", f"{self.duplicates_delivered}", "(allowed)"),
            ("events by type (unique)", _counts(self.events_by_type), ""),
            ("events expected (committed changes)", f"{self.events_expected}", ""),
            ("changes with exactly one unique event", f"{self.events_matched}",
             f"{self.events_expected}"),
            ("changes without an event", f"{self.changes_without_event}", "0"),
            ("changes with several unique events", f"{self.changes_with_several_events}", "0"),
            ("events without a committed change", f"{self.events_without_change}", "0"),
            ("orders whose events arrived out of version order",
             f"{self.orders_with_events_out_of_order}", "0 (not enforced)"),
            ("actions without a change event (by correlation id)",
             f"{self.actions_without_event}", "0"),
            ("  of which dead-lettered / accepted without effect",
             f"{self.actions_dead_lettered} / {self.actions_absorbed}", "0 / 0"),
            ("actions with more than one change", f"{self.actions_applied_twice}", "0"),
            ("commands rejected (order.command_rejected)", f"{self.commands_rejected}", "0"),
            ("dead-lettered (orders.dead)", f"{self.dead_lettered}", "0"),
            ("dead letters by reason", _counts(self.dead_letters_by_reason), ""),
            ("chains failed", f"{self.chains_failed}", "0"),
            ("chains not started (id never learned)", f"{self.chains_unstarted}", "0"),
            ("ids read from MongoDB (placed event late)", f"{self.ids_from_database}", ""),
            ("events not published (events feed backlog)", f"{self.events_unpublished}", "0"),
            ("workers that exited on their own", f"{self.worker_exits_unexpected}", "0"),
            ("broker outages not injected by this run", f"{self.broker_outages_not_injected}",
             "0 (not a failure)"),
            ("load completed", "yes" if self.load_completed else "NO (stalled)", "yes"),
            ("quiescent", "yes" if self.quiescent else "NO", "yes"),
            ("LOST", f"{self.lost}", "0"),
            ("DOUBLED", f"{self.doubled}", "0"),
        ]  # fmt: skip


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{key}: {value}" for key, value in sorted(counts.items())) or "-"


def render_table(rows: Sequence[tuple[str, str, str]]) -> str:
    """A Markdown table, readable on a terminal and pasteable into the docs."""
    header = ("what", "measured", "expected")
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(3)]
    lines = [
        "| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) + " |"
        for row in (header, *rows)
    ]
    lines.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return "\n".join(lines)


@dataclass(frozen=True)
class Produced:
    """What the producer got out: steps confirmed per order, and how ids were learned."""

    steps_published: Mapping[str, int]
    """chaos ref -> how many of the order's steps were published (absent: not placed)."""
    published: Mapping[str, int]
    republished: int
    publish_retries: int
    ids_from_database: int


@dataclass
class ChainCheck:
    missing: int = 0
    unexpected: int = 0
    metadata_missing: int = 0
    metadata_unexpected: int = 0
    failed: bool = False


@dataclass
class Evidence:
    """Samples that explain the failures, for the JSON report."""

    failed_chains: list[dict[str, Any]] = field(default_factory=list)
    missing_placements: list[str] = field(default_factory=list)
    changes_without_event: list[dict[str, Any]] = field(default_factory=list)
    actions_absorbed: list[str] = field(default_factory=list)
    actions_applied_twice: list[str] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_ledger(
    workload: Workload,
    produced: Produced,
    *,
    docs: Sequence[Document],
    events: Mapping[str, SeenEvent],
    deliveries: int,
    dead_letters: Sequence[DeadLetter],
) -> tuple[Ledger, Evidence]:
    ledger = Ledger(
        messages=workload.messages,
        commands_published=dict(produced.published),
        republished=produced.republished,
        publish_retries=produced.publish_retries,
        orders_stored=len(docs),
        ids_from_database=produced.ids_from_database,
    )
    evidence = Evidence()
    _count_chains(ledger, evidence, workload, produced, docs)
    _count_events(ledger, evidence, docs, events, deliveries)
    _count_actions(ledger, evidence, workload, produced, events=events, dead_letters=dead_letters)
    ledger.dead_lettered = len(dead_letters)
    reasons = Counter(f"{d.routing_key} {d.error_code or 'no x-error-code'}" for d in dead_letters)
    ledger.dead_letters_by_reason = dict(reasons)
    evidence.dead_letters = [asdict(letter) for letter in dead_letters[:SAMPLES]]
    return ledger, evidence


def _count_chains(
    ledger: Ledger,
    evidence: Evidence,
    workload: Workload,
    produced: Produced,
    docs: Sequence[Document],
) -> None:
    by_key: dict[str, list[Document]] = defaultdict(list)
    for doc in docs:
        by_key[str(doc.get("idempotency_key"))].append(doc)
    planned_keys = {order.idempotency_key for order in workload.orders}
    ledger.orders_unplanned = sum(len(v) for k, v in by_key.items() if k not in planned_keys)
    for order in workload.orders:
        published = produced.steps_published.get(order.ref)
        if published is None:
            continue  # never placed (the run was cut short)
        ledger.placements_expected += 1
        ledger.chains_unstarted += published < len(order.steps)
        ledger.transitions_expected += len(order.targets(published))
        ledger.metadata_updates_expected += order.metadata_steps(published)
        stored = by_key.get(order.idempotency_key, [])
        if not stored:
            ledger.placements_missing += 1
            _sample(evidence.missing_placements, order.ref)
            continue
        ledger.placements_stored += 1
        ledger.placements_doubled += len(stored) - 1
        check = check_chain(order, published, stored[0])
        ledger.transitions_missing += check.missing
        ledger.transitions_unexpected += check.unexpected
        ledger.metadata_updates_missing += check.metadata_missing
        ledger.metadata_updates_unexpected += check.metadata_unexpected
        if check.failed:
            ledger.chains_failed += 1
            _sample(evidence.failed_chains, _chain_evidence(order, published, stored[0]))
    for doc in docs:
        history = doc.get("status_history") or []
        ledger.transitions_applied += max(len(history) - 1, 0)
        ledger.metadata_updates_applied += int(doc["version"]) - len(history)


def check_chain(order: PlannedOrder, published: int, doc: Document) -> ChainCheck:
    """Compare one stored order with the chain commanded for it."""
    history = doc.get("status_history") or []
    expected = order.targets(published)
    applied = [entry["to"] for entry in history[1:]]
    matched = _common_subsequence(expected, applied)
    expected_meta = order.metadata_steps(published)
    applied_meta = int(doc["version"]) - len(history)
    check = ChainCheck(
        missing=len(expected) - matched,
        unexpected=len(applied) - matched,
        metadata_missing=max(expected_meta - applied_meta, 0),
        metadata_unexpected=max(applied_meta - expected_meta, 0),
    )
    check.failed = (
        check.missing + check.unexpected + check.metadata_missing + check.metadata_unexpected > 0
        or doc.get("status") != order.final_status(published)
        or doc.get("metadata") != order.final_metadata(published)
        or not _history_is_connected(history)
    )
    return check


def _history_is_connected(history: Sequence[Mapping[str, Any]]) -> bool:
    """Placing first (from null to pending), then each entry starts where the last ended."""
    if not history or history[0].get("from") is not None or history[0].get("to") != "pending":
        return False
    return all(later["from"] == earlier["to"] for earlier, later in pairwise(history))


def _common_subsequence(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence: steps applied in the commanded order."""
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def _chain_evidence(order: PlannedOrder, published: int, doc: Document) -> dict[str, Any]:
    return {
        "ref": order.ref,
        "id": doc.get("_id"),
        "order_id": doc.get("order_id"),
        "expected_statuses": ["pending", *order.targets(published)],
        "stored_statuses": [entry["to"] for entry in doc.get("status_history") or []],
        "expected_metadata": order.final_metadata(published),
        "stored_metadata": doc.get("metadata"),
        "version": doc.get("version"),
        "steps": [step.action + (f"->{step.target}" if step.target else "") for step in
                  order.steps[:published]],
    }  # fmt: skip


def _count_events(
    ledger: Ledger,
    evidence: Evidence,
    docs: Sequence[Document],
    events: Mapping[str, SeenEvent],
    deliveries: int,
) -> None:
    ledger.events_delivered = deliveries
    ledger.events_unique = len(events)
    ledger.duplicates_delivered = deliveries - len(events)
    ledger.events_by_type = dict(Counter(event.event_type for event in events.values()))
    ledger.commands_rejected = ledger.events_by_type.get("order.command_rejected", 0)
    per_change: dict[tuple[int | None, int | None], int] = Counter(
        (event.order_db_id, event.version)
        for event in events.values()
        if event.event_type in CHANGE_EVENTS
    )
    committed: set[tuple[int | None, int | None]] = set()
    for doc in docs:
        for version in range(1, int(doc["version"]) + 1):
            key = (doc["_id"], version)
            committed.add(key)
            count = per_change.get(key, 0)
            ledger.events_expected += 1
            ledger.events_matched += count == 1
            ledger.changes_with_several_events += count > 1
            if count == 0:
                ledger.changes_without_event += 1
                _sample(evidence.changes_without_event, {"id": doc["_id"], "version": version})
    ledger.events_without_change = sum(n for key, n in per_change.items() if key not in committed)
    ledger.orders_with_events_out_of_order = _out_of_order(events.values())


def _count_actions(
    ledger: Ledger,
    evidence: Evidence,
    workload: Workload,
    produced: Produced,
    *,
    events: Mapping[str, SeenEvent],
    dead_letters: Sequence[DeadLetter],
) -> None:
    """Every published action should have caused exactly one change, hence one event.

    Events carry the triggering command's correlation id, which the producer sets to the
    command's message id; a re-published copy has the same id.
    """
    caused = Counter(e.correlation_id for e in events.values() if e.event_type in CHANGE_EVENTS)
    dead = {letter.message_id for letter in dead_letters}
    for order in workload.orders:
        for step in order.steps[: produced.steps_published.get(order.ref, 0)]:
            changes = caused[step.message_id]
            if changes > 1:
                ledger.actions_applied_twice += 1
                _sample(evidence.actions_applied_twice, step.message_id)
            if changes:
                continue
            ledger.actions_without_event += 1
            if step.message_id in dead:
                ledger.actions_dead_lettered += 1
            else:
                ledger.actions_absorbed += 1
                _sample(evidence.actions_absorbed, step.message_id)


def _out_of_order(events: Iterable[SeenEvent]) -> int:
    """Orders whose change events were first delivered in other than version order."""
    arrivals: dict[int | None, list[tuple[int, int]]] = defaultdict(list)
    for event in events:
        if event.event_type in CHANGE_EVENTS and event.version is not None:
            arrivals[event.order_db_id].append((event.sequence, event.version))
    return sum(
        1
        for seen in arrivals.values()
        if [version for _, version in sorted(seen)] != sorted(version for _, version in seen)
    )


def _sample(samples: list[Any], item: Any) -> None:
    if len(samples) < SAMPLES:
        samples.append(item)
