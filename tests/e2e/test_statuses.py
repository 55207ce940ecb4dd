"""``orders.statuses``: the eight statuses, in the contract's order."""

from __future__ import annotations

import pytest

from .amqp_client import AmqpClient, Body
from .contract import STATUSES, assert_success


@pytest.mark.parametrize("body", [{}, b""], ids=["empty-object", "empty-body"])
async def test_statuses(client: AmqpClient, body: Body) -> None:
    reply = await client.request("orders.statuses", body)
    assert assert_success(reply) == STATUSES
