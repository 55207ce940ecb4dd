"""The order and what each action does to it. Pure: no I/O, the caller supplies time and ids."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from orders_vocabulary.money import ZERO
from orders_vocabulary.statuses import OrderStatus
from service.domain import events
from service.domain.commands import (
    CancelOrder,
    CompleteOrder,
    OrderAction,
    PlaceOrder,
    UpdateMetadata,
    UpdateStatus,
)
from service.domain.errors import InvalidTransition, VersionConflict
from service.domain.idempotency import RequestStamp, is_repeat
from service.domain.model import HistoryEntry, Item, Order
from service.domain.statuses import TRANSITIONS, can_move

__all__ = [
    "REMEMBERED_REQUESTS",
    "Change",
    "HistoryEntry",
    "Item",
    "Order",
    "decide",
    "merge_patch",
    "place",
    "target_status",
]

REMEMBERED_REQUESTS = 200
"""How many applied request ids an order keeps for de-duplicating redeliveries."""


@dataclass(frozen=True)
class Change:
    """One applied action: the order before and after, and the event that tells the world."""

    before: Order
    after: Order
    event: events.Event
    history: HistoryEntry | None
    request: RequestStamp | None


def place(
    command: PlaceOrder, *, id: int, order_id: int, now: datetime, default_currency: str
) -> tuple[Order, events.Event]:
    """A new order at version 1 with its first history entry, and its `order.placed` event."""
    items = command.items
    subtotal = sum((i.amount for i in items), ZERO)
    total_tax = command.total_tax if command.total_tax is not None else ZERO
    order = Order(
        id=id,
        order_id=order_id,
        customer_id=command.customer_id,
        user_id=command.user_id,
        items=items,
        billing=dict(command.billing),
        subtotal=subtotal,
        total_tax=total_tax,
        total=command.total if command.total is not None else subtotal + total_tax,
        currency=command.currency or default_currency,
        status=command.status,
        notes=command.notes,
        metadata=dict(command.metadata),
        version=1,
        status_history=(HistoryEntry(None, command.status, now, "place", command.notes),),
        created_at=now,
        updated_at=now,
    )
    return order, events.order_placed(order, now)


def decide(
    order: Order, action: OrderAction, request: RequestStamp | None, now: datetime
) -> Change | None:
    """Apply `action` to `order`; None when it changes nothing (a repeat or a no-op).

    Checked in the contract's order: an already applied request (the same body: a repeat;
    another body: `IdempotencyConflict`), then `expected_version`, then the transition table.
    """
    if request is not None and is_repeat(request, order.applied(request.key)):
        return None
    if action.expected_version is not None and action.expected_version != order.version:
        raise VersionConflict(action.expected_version, order.version)
    if isinstance(action, UpdateMetadata):
        return _update_metadata(order, action, request, now)
    return _move(order, action, request, now)


def target_status(action: UpdateStatus | CancelOrder | CompleteOrder) -> OrderStatus:
    if isinstance(action, CancelOrder):
        return OrderStatus.CANCELLED
    if isinstance(action, CompleteOrder):
        return OrderStatus.COMPLETED
    return action.status


def _move(
    order: Order,
    action: UpdateStatus | CancelOrder | CompleteOrder,
    request: RequestStamp | None,
    now: datetime,
) -> Change | None:
    target = target_status(action)
    if target == order.status:
        return None
    if not can_move(order.status, target):
        raise InvalidTransition(order.status, target, TRANSITIONS[order.status])
    reason = action.reason if isinstance(action, CancelOrder) else None
    entry = HistoryEntry(order.status, target, now, action.action, action.notes, reason)
    after = _bump(order, request, now, status=target, status_history=(*order.status_history, entry))
    return Change(order, after, events.status_changed(after, entry), entry, request)


def _update_metadata(
    order: Order, action: UpdateMetadata, request: RequestStamp | None, now: datetime
) -> Change | None:
    if action.mode == "replace":
        metadata = dict(action.metadata)
    else:
        metadata = merge_patch(order.metadata, action.metadata)
    if metadata == order.metadata:
        return None
    after = _bump(order, request, now, metadata=metadata)
    return Change(order, after, events.metadata_updated(after, now), None, request)


def _bump(order: Order, request: RequestStamp | None, now: datetime, **changes: Any) -> Order:
    applied = order.applied_requests
    if request is not None:
        applied = (*applied, request)[-REMEMBERED_REQUESTS:]
    return replace(
        order, version=order.version + 1, updated_at=now, applied_requests=applied, **changes
    )


def merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """JSON Merge Patch (RFC 7386): objects merge recursively, a null removes the key."""
    merged = dict(target)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_patch(merged[key], value)
        elif isinstance(value, Mapping):
            merged[key] = merge_patch({}, value)
        else:
            merged[key] = value
    return merged
