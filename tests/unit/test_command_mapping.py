"""Wire commands mapped to the domain's: every field the domain needs, nothing of pydantic."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

import pytest

from orders_vocabulary.statuses import OrderStatus
from schemas.commands import ACTION_NAMES
from service.application.commands import order_action, place_command
from service.domain import commands
from service.domain.model import Item
from tests.unit.builders import wire_action, wire_place


def test_a_place_maps_items_billing_and_defaults() -> None:
    wire = wire_place(total_tax=Decimal("5.00"), currency="USD", user_id="USER-1")

    command = place_command(wire)

    assert command.items[1] == Item(2, "Window Cleaning", 2, Decimal("75.00"), None)
    assert command.items[0].metadata == {"filter_options": [1, 2, 3]}
    assert command.billing == wire.billing.model_dump(mode="json")
    assert type(command.billing) is dict
    assert (command.total, command.total_tax) == (None, Decimal("5.00"))
    assert (command.status, command.currency, command.user_id) == (
        OrderStatus.PENDING, "USD", "USER-1"
    )  # fmt: skip
    assert command.metadata == {"source": "webform", "campaign_id": "SUMMER2025"}


ACTIONS: dict[str, tuple[type[commands.Action], dict[str, Any]]] = {
    "update_status": (commands.UpdateStatus, {"status": "processing", "notes": "n"}),
    "cancel": (commands.CancelOrder, {"reason": "r", "notes": "n"}),
    "complete": (commands.CompleteOrder, {"notes": "n"}),
    "update_metadata": (commands.UpdateMetadata, {"metadata": {"a": 1}, "mode": "replace"}),
}


def test_every_wire_action_has_a_domain_command() -> None:
    assert set(ACTIONS) == set(ACTION_NAMES)


@pytest.mark.parametrize("name", ACTION_NAMES)
def test_an_action_maps_its_target_and_its_own_fields(name: str) -> None:
    kind, fields = ACTIONS[name]
    wire = wire_action(name, expected_version=2, request_id="req-1", **fields)

    command = order_action(wire)

    assert type(command) is kind
    assert command.action == name == wire.action
    assert (command.id, command.order_id, command.expected_version) == (3, None, 2)
    mapped = {f.name: getattr(command, f.name) for f in dataclasses.fields(command)}
    assert {key: mapped[key] for key in fields} == {key: getattr(wire, key) for key in fields}
    assert "request_id" not in mapped  # the application stamps the request, not the domain
