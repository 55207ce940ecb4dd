"""The chaos workload: placed orders and, per order, a valid chain of actions.

Everything is derived from the seed, so a run can be repeated. The harness speaks only the
public contract: the transition table below is the contract's, copied on purpose (the
harness must not import the service it checks).
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

JSONObject = dict[str, Any]

PLACE = "orders.place"
ACTION = "orders.action"

TRANSITIONS: Mapping[str, frozenset[str]] = {
    "pending": frozenset({"processing", "confirmed", "in_progress", "on_hold", "cancelled"}),
    "processing": frozenset({"confirmed", "in_progress", "completed", "on_hold", "cancelled"}),
    "confirmed": frozenset({"processing", "in_progress", "completed", "on_hold", "cancelled"}),
    "in_progress": frozenset({"completed", "on_hold", "cancelled"}),
    "on_hold": frozenset({"pending", "processing", "confirmed", "in_progress", "cancelled"}),
    "completed": frozenset({"refunded"}),
    "cancelled": frozenset(),
    "refunded": frozenset(),
}
"""CONTRACT.md, "Statuses and transitions"."""

ROUTES: Sequence[tuple[int, tuple[str, ...]]] = (
    (30, ("processing", "confirmed", "in_progress", "completed")),
    (12, ("confirmed", "in_progress", "completed")),
    (10, ("processing", "on_hold", "confirmed", "in_progress", "completed")),
    (8, ("on_hold", "pending", "processing", "completed")),
    (10, ("processing", "cancelled")),
    (6, ("on_hold", "cancelled")),
    (8, ("processing", "completed", "refunded")),
    (8, ("confirmed", "in_progress", "cancelled")),
    (8, ("in_progress", "on_hold", "in_progress", "completed", "refunded")),
)
"""(weight, statuses after `pending`): the status routes an order's chain follows."""

METADATA_STEP_CHANCE = 0.3
REPLACE_MODE_CHANCE = 0.25
CUSTOMERS = 500


def _check_routes() -> None:
    for _, route in ROUTES:
        current = "pending"
        for target in route:
            if target not in TRANSITIONS[current]:
                raise AssertionError(f"route {route}: {current} -> {target} is not allowed")
            current = target


_check_routes()


@dataclass(frozen=True)
class OrderIds:
    """What the producer learns about a placed order: its database id and public number."""

    id: int
    order_id: int


@dataclass(frozen=True)
class Step:
    """One action of a chain. `target` is the status it moves to; None for metadata."""

    number: int
    message_id: str
    request_id: str
    action: str
    target: str | None
    by_order_id: bool
    metadata: JSONObject | None = None
    mode: str = "merge"
    notes: str | None = None
    reason: str | None = None

    def body(self, ids: OrderIds) -> JSONObject:
        """The `orders.action` body, addressed by `id` or by `order_id`."""
        body: JSONObject = {"order_id": ids.order_id} if self.by_order_id else {"id": ids.id}
        body |= {"action": self.action, "request_id": self.request_id}
        if self.action == "update_status":
            body["status"] = self.target
        if self.action == "update_metadata":
            body |= {"metadata": self.metadata, "mode": self.mode}
        if self.notes is not None:
            body["notes"] = self.notes
        if self.reason is not None:
            body["reason"] = self.reason
        return body

    def apply_metadata(self, metadata: JSONObject) -> JSONObject:
        """The order's metadata after this step (flat keys: a shallow merge patch is enough)."""
        if self.metadata is None:
            return metadata
        if self.mode == "replace":
            return dict(self.metadata)
        merged = dict(metadata)
        for key, value in self.metadata.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        return merged


@dataclass(frozen=True)
class PlannedOrder:
    """One order of the workload: how it is placed and the chain that follows."""

    index: int
    ref: str
    idempotency_key: str
    message_id: str
    place_body: JSONObject
    steps: tuple[Step, ...]

    def targets(self, published: int | None = None) -> list[str]:
        """Statuses the first `published` steps move through, in order."""
        return [s.target for s in self.steps[:published] if s.target is not None]

    def metadata_steps(self, published: int | None = None) -> int:
        return sum(1 for s in self.steps[:published] if s.target is None)

    def final_status(self, published: int | None = None) -> str:
        return ["pending", *self.targets(published)][-1]

    def final_metadata(self, published: int | None = None) -> JSONObject:
        metadata: JSONObject = dict(self.place_body["metadata"])
        for step in self.steps[:published]:
            metadata = step.apply_metadata(metadata)
        return metadata


@dataclass(frozen=True)
class Workload:
    run: str
    seed: int
    messages: int
    orders: tuple[PlannedOrder, ...]

    def by_ref(self) -> dict[str, PlannedOrder]:
        return {order.ref: order for order in self.orders}

    def by_key(self) -> dict[str, PlannedOrder]:
        return {order.idempotency_key: order for order in self.orders}


def encode(body: JSONObject) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def plan_workload(messages: int, seed: int, run: str) -> Workload:
    """Orders and chains totalling exactly `messages` commands (the last chain is cut short)."""
    rng = random.Random(seed)  # noqa: S311 - reproducible, not secret
    orders: list[PlannedOrder] = []
    remaining = messages
    while remaining > 0:
        order = _plan_order(rng, run, len(orders) + 1, max_steps=remaining - 1)
        orders.append(order)
        remaining -= 1 + len(order.steps)
    return Workload(run, seed, messages, tuple(orders))


def _plan_order(rng: random.Random, run: str, index: int, max_steps: int) -> PlannedOrder:
    ref = f"{run}-{index:06d}"
    weights, routes = zip(*ROUTES, strict=True)
    route = rng.choices(routes, weights=weights)[0]
    steps = _steps(rng, ref, route, index)[:max_steps]
    return PlannedOrder(
        index=index,
        ref=ref,
        idempotency_key=f"place-{ref}",
        message_id=f"{ref}-place",
        place_body=_place_body(rng, ref),
        steps=tuple(steps),
    )


def _place_body(rng: random.Random, ref: str) -> JSONObject:
    items = [
        {
            "product_id": rng.randint(1, 40),
            "product_name": f"Service {rng.randint(1, 40)}",
            "quantity": rng.randint(1, 5),
            "price": f"{rng.randint(5, 400)}.{rng.choice(['00', '50', '95'])}",
        }
        for _ in range(rng.randint(1, 3))
    ]
    return {
        "customer_id": f"CHAOS-{rng.randrange(CUSTOMERS):04d}",
        "items": items,
        "billing": {
            "first_name": "Chaos",
            "last_name": f"Monkey{rng.randrange(100)}",
            "email": "chaos@example.com",
            "country": "NL",
        },
        "notes": "chaos run",
        "metadata": {"chaos_ref": ref, "source": "chaos"},
        "idempotency_key": f"place-{ref}",
    }


def _steps(rng: random.Random, ref: str, route: tuple[str, ...], index: int) -> list[Step]:
    kinds: list[str | None] = list(route)
    if rng.random() < METADATA_STEP_CHANCE:
        kinds.insert(rng.randint(0, len(kinds)), None)
    return [_step(rng, ref, number, target, index) for number, target in enumerate(kinds, 1)]


def _step(rng: random.Random, ref: str, number: int, target: str | None, index: int) -> Step:
    step = Step(
        number=number,
        message_id=f"{ref}-a{number}",
        request_id=f"{ref}-r{number}",
        action="update_status",
        target=target,
        by_order_id=rng.random() < 0.5,
    )
    if target is None:
        if rng.random() < REPLACE_MODE_CHANCE:
            metadata: JSONObject = {"chaos_ref": ref, "replaced_at": number}
            return replace(step, action="update_metadata", metadata=metadata, mode="replace")
        return replace(step, action="update_metadata", metadata={f"step_{number}": index})
    if target == "cancelled" and rng.random() < 0.5:
        return replace(step, action="cancel", reason="customer changed their mind")
    if target == "completed" and rng.random() < 0.5:
        return replace(step, action="complete", notes="done")
    return step
