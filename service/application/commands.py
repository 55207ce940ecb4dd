"""Wire commands (`schemas.commands`) mapped to the domain's commands."""

from __future__ import annotations

from schemas import commands as wire
from service.domain import commands as domain
from service.domain.model import Item


def place_command(command: wire.PlaceOrder) -> domain.PlaceOrder:
    return domain.PlaceOrder(
        customer_id=command.customer_id,
        user_id=command.user_id,
        items=tuple(
            Item(i.product_id, i.product_name, i.quantity, i.price, i.metadata)
            for i in command.items
        ),
        billing=command.billing.model_dump(mode="json"),
        total=command.total,
        total_tax=command.total_tax,
        status=command.status,
        notes=command.notes,
        metadata=command.metadata,
        currency=command.currency,
    )


def order_action(action: wire.OrderAction) -> domain.OrderAction:
    target = {
        "id": action.id,
        "order_id": action.order_id,
        "expected_version": action.expected_version,
    }
    if isinstance(action, wire.UpdateStatus):
        return domain.UpdateStatus(**target, status=action.status, notes=action.notes)
    if isinstance(action, wire.CancelOrder):
        return domain.CancelOrder(**target, reason=action.reason, notes=action.notes)
    if isinstance(action, wire.CompleteOrder):
        return domain.CompleteOrder(**target, notes=action.notes)
    return domain.UpdateMetadata(**target, metadata=action.metadata, mode=action.mode)
