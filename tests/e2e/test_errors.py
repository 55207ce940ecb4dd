"""Bad input with ``reply_to``: one error reply each, and the worker keeps going."""

from __future__ import annotations

import json
from typing import Any

import pytest

from .amqp_client import AmqpClient, Body
from .contract import (
    STATUSES,
    TRANSITIONS,
    act,
    assert_error,
    assert_success,
    assert_validation_error,
    get_order,
    list_orders,
    new_customer_id,
    place,
    simple_order,
)

MISSING_ID = 987_654_321
MAX_BODY = 256 * 1024


def _oversized_order() -> bytes:
    """A valid PlaceOrder, padded with JSON whitespace to just over 256 KiB."""
    raw = json.dumps(simple_order(new_customer_id())).encode()
    padded = raw[:-1] + b" " * (MAX_BODY + 1 - len(raw)) + raw[-1:]
    assert len(padded) == MAX_BODY + 1
    return padded


BAD_REQUESTS: dict[str, Body] = {
    "not-json": b"this is {not json",
    "json-array": b'[{"customer_id": "x"}]',
    "json-string": b'"just a string"',
    "json-null": b"null",
    "not-utf8": b'{"customer_id": "\xff\xfe"}',
}


@pytest.mark.parametrize("body", BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys())
@pytest.mark.parametrize("routing_key", ["orders.place", "orders.action", "orders.list"])
async def test_body_that_is_not_a_json_object_is_bad_request(
    client: AmqpClient, routing_key: str, body: Body
) -> None:
    assert_error(await client.request(routing_key, body), "bad_request")


async def test_body_over_256_kib_is_bad_request(client: AmqpClient) -> None:
    assert_error(await client.request("orders.place", _oversized_order()), "bad_request")
    assert_error(await client.request("orders.list", _oversized_order()), "bad_request")


async def test_nan_in_json_is_rejected(client: AmqpClient) -> None:
    """``NaN`` is not JSON; as a price it would be no amount at all."""
    raw = json.dumps(simple_order(new_customer_id())).replace('"10.00"', "NaN").encode()
    reply = await client.request("orders.place", raw)
    assert reply["success"] is False, reply
    assert reply["error"]["code"] in {"bad_request", "validation_error"}, reply


async def test_missing_billing_is_validation_error(client: AmqpClient) -> None:
    body = simple_order(new_customer_id())
    del body["billing"]
    assert_validation_error(await client.request("orders.place", body), loc_contains="billing")


def _with(body: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**body, **changes}


def _invalid_orders() -> dict[str, dict[str, Any]]:
    base = simple_order("cust-invalid")
    item = base["items"][0]
    return {
        "price-3-decimals": _with(base, items=[{**item, "price": "1.005"}]),
        "price-3-decimals-number": _with(base, items=[{**item, "price": 1.005}]),
        "negative-price": _with(base, items=[{**item, "price": "-1.00"}]),
        "total-3-decimals": _with(base, total="10.001"),
        "quantity-zero": _with(base, items=[{**item, "quantity": 0}]),
        "quantity-over-10000": _with(base, items=[{**item, "quantity": 10_001}]),
        "no-items": _with(base, items=[]),
        "501-items": _with(base, items=[item] * 501),
        "bad-email": _with(base, billing={**base["billing"], "email": "not-an-email"}),
        "no-first-name": _with(base, billing={"last_name": "Roe", "email": "jane.roe@example.com"}),
        "metadata-dollar-key": _with(base, metadata={"$where": "sleep(1000)"}),
        "metadata-dotted-key": _with(base, metadata={"a.b": 1}),
        "metadata-not-object": _with(base, metadata=["a"]),
        "customer-id-operator": _with(base, customer_id={"$ne": None}),
        "unknown-status": _with(base, status="shipped"),
        "price-nan": _with(base, items=[{**item, "price": "NaN"}]),
        "price-infinity": _with(base, items=[{**item, "price": "Infinity"}]),
        "price-not-a-number": _with(base, items=[{**item, "price": "ten"}]),
        "quantity-fraction": _with(base, items=[{**item, "quantity": 1.5}]),
        "total-nan": _with(base, total="NaN"),
        "metadata-nested-dollar-key": _with(base, metadata={"a": {"$gt": 1}}),
        "metadata-nested-dotted-key": _with(base, metadata={"a": [{"b.c": 1}]}),
        "item-metadata-dollar-key": _with(base, items=[{**item, "metadata": {"$x": 1}}]),
        "no-customer-id": {k: v for k, v in base.items() if k != "customer_id"},
        "no-items-key": {k: v for k, v in base.items() if k != "items"},
    }


@pytest.mark.parametrize("body", _invalid_orders().values(), ids=_invalid_orders().keys())
async def test_invalid_order_is_validation_error(client: AmqpClient, body: Body) -> None:
    assert_validation_error(await client.request("orders.place", body))


async def test_invalid_order_creates_nothing(client: AmqpClient) -> None:
    customer_id = new_customer_id()
    body = simple_order(customer_id, metadata={"$set": {"x": 1}})
    assert_validation_error(await client.request("orders.place", body))
    listed = await list_orders(client, customer_id=customer_id)
    assert listed["data"] == []
    assert listed["pagination"]["total"] == 0


@pytest.mark.parametrize("query", [{"id": MISSING_ID}, {"order_id": 999_999_999}])
async def test_get_missing_order_is_not_found(client: AmqpClient, query: dict[str, int]) -> None:
    assert_error(await client.request("orders.get", query), "not_found")


async def test_get_with_operator_is_validation_error(client: AmqpClient) -> None:
    assert_validation_error(await client.request("orders.get", {"id": {"$gt": 0}}))


async def test_unknown_action(client: AmqpClient) -> None:
    order = await place(client, simple_order(new_customer_id()))
    assert_error(await act(client, order["id"], "explode"), "unknown_action")
    # The action name is checked before the order's existence.
    assert_error(await act(client, MISSING_ID, "explode"), "unknown_action")
    assert (await get_order(client, order["id"]))["version"] == 1


async def test_action_fields_are_checked_before_existence(client: AmqpClient) -> None:
    assert_validation_error(await act(client, MISSING_ID, "update_status"))
    assert_validation_error(await act(client, MISSING_ID, "update_metadata"))
    assert_validation_error(await act(client, MISSING_ID, "update_status", status="shipped"))


async def test_action_on_missing_order_is_not_found(client: AmqpClient) -> None:
    assert_error(await act(client, MISSING_ID, "cancel", reason="nope"), "not_found")


async def test_invalid_transition(client: AmqpClient) -> None:
    order = await place(client, simple_order(new_customer_id()))
    error = assert_error(
        await act(client, order["id"], "update_status", status="completed"),
        "invalid_transition",
    )
    details = error["details"]
    assert details["from"] == "pending"
    assert details["to"] == "completed"
    assert isinstance(details["allowed"], list)
    assert set(details["allowed"]) == TRANSITIONS["pending"]
    assert len(details["allowed"]) == len(TRANSITIONS["pending"])
    # `complete` is update_status to completed under the same table.
    error = assert_error(await act(client, order["id"], "complete"), "invalid_transition")
    assert error["details"]["to"] == "completed"
    stored = await get_order(client, order["id"])
    assert stored["status"] == "pending"
    assert stored["version"] == 1


async def test_version_conflict_changes_nothing(client: AmqpClient) -> None:
    order = await place(client, simple_order(new_customer_id()))
    error = assert_error(
        await act(client, order["id"], "update_status", status="confirmed", expected_version=2),
        "version_conflict",
    )
    assert error["details"]["current_version"] == 1
    # expected_version is checked before the transition.
    error = assert_error(
        await act(client, order["id"], "update_status", status="completed", expected_version=7),
        "version_conflict",
    )
    assert error["details"]["current_version"] == 1
    stored = await get_order(client, order["id"])
    assert stored["status"] == "pending"
    assert stored["version"] == 1
    ok = assert_success(
        await act(client, order["id"], "update_status", status="confirmed", expected_version=1)
    )
    assert ok["version"] == 2


INVALID_LIST_QUERIES: dict[str, dict[str, Any]] = {
    "per-page-101": {"per_page": 101},
    "per-page-0": {"per_page": 0},
    "page-0": {"page": 0},
    "order-by-password": {"order_by": "password"},
    "order-direction": {"order_direction": "sideways"},
    "unknown-status": {"status": "shipped"},
    "unknown-status-in-list": {"status": ["pending", "shipped"]},
    "bad-date": {"date_from": "06/11/2025"},
    "customer-id-operator": {"customer_id": {"$ne": None}},
    "search-operator": {"search": {"$regex": ".*"}},
}


@pytest.mark.parametrize("query", INVALID_LIST_QUERIES.values(), ids=INVALID_LIST_QUERIES.keys())
async def test_invalid_list_query_is_validation_error(
    client: AmqpClient, query: dict[str, Any]
) -> None:
    assert_validation_error(await client.request("orders.list", query))


@pytest.mark.parametrize("query", [{"date_to": "2025-13-01"}, {"customer_id": ["a", "b"]}])
async def test_invalid_stats_query_is_validation_error(
    client: AmqpClient, query: dict[str, Any]
) -> None:
    assert_validation_error(await client.request("orders.stats", query))


@pytest.mark.parametrize("search", [".*", "^", "(", "[a-z]+", "\\", "*"])
async def test_search_is_literal_not_a_regex(client: AmqpClient, search: str) -> None:
    customer_id = new_customer_id()
    await place(client, simple_order(customer_id))
    listed = await list_orders(client, customer_id=customer_id, search=search)
    assert listed["data"] == []
    assert listed["pagination"]["total"] == 0
    assert listed["pagination"]["last_page"] == 1


async def test_search_matches_regex_characters_literally(client: AmqpClient) -> None:
    customer_id = new_customer_id()
    wanted = await place(client, simple_order(customer_id, email="a.b+tag@example.com"))
    await place(client, simple_order(customer_id, email="axbbtag@example.com"))
    # As a regex, "b+tag" would match the second order and "a.b" both; literally, only one.
    for search in ("b+tag", "a.b+", "A.B+TAG@"):
        listed = await list_orders(client, customer_id=customer_id, search=search)
        assert [row["id"] for row in listed["data"]] == [wanted["id"]], search


async def test_worker_still_answers_after_bad_input(client: AmqpClient) -> None:
    bad: list[tuple[str, Body]] = [
        (routing_key, body)
        for routing_key in ("orders.place", "orders.action", "orders.get", "orders.stats")
        for body in BAD_REQUESTS.values()
    ]
    replies = [await client.request(routing_key, body) for routing_key, body in bad]
    assert all(reply["success"] is False for reply in replies)
    assert assert_success(await client.request("orders.statuses", {})) == STATUSES
