"""The HTTP gateway in process (httpx over ASGI, its lifespan running) against the session's
real mongod and the real RabbitMQ vhost: the routes, their status codes and envelopes, and the
events their changes publish on the events exchange.

The module shares one gateway and one database; every test uses customer ids of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection
from fastapi import FastAPI
from pydantic import SecretStr
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection

from devtools.embedded_mongo import EmbeddedMongo
from service.config import Settings
from service.gateway.app import create_app
from service.gateway.auth import key_digest, new_key
from service.store.client import ORDERS, Document, connect, database
from service.store.outbox import backlog

EXAMPLE_ORDER = Path(__file__).parents[2] / "docs" / "example-order.json"
MAX_BODY = 2048
BASE_URL = "http://gateway"
PLACE = "/api/orders/place"
LIST = "/api/orders/list"
WAIT_SECONDS = 15.0
API_KEY = new_key()
AUTH = {"Authorization": f"Bearer {API_KEY}"}
JSON_TYPE = {"Content-Type": "application/json"}
PENDING_ALLOWED = ["processing", "confirmed", "in_progress", "on_hold", "cancelled"]


# -- fixtures -------------------------------------------------------------------------------------


def gateway_settings(amqp_url: str, mongo_url: str, **overrides: Any) -> Settings:
    """Settings of a gateway that accepts `API_KEY`, unless `overrides` say otherwise."""
    fields: dict[str, Any] = {
        "amqp_url": SecretStr(amqp_url),
        "mongo_url": SecretStr(mongo_url),
        "mongo_database": f"http_{uuid.uuid4().hex[:12]}",
        "http_port": 0,
        "api_key_hashes": frozenset({key_digest(API_KEY)}),
    }
    return Settings(**(fields | overrides))


@contextlib.asynccontextmanager
async def running(
    settings: Settings, *, headers: dict[str, str] | None = None, app: FastAPI | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway with its lifespan running, and a client that talks to it in process,
    sending `headers` (by default: the API key) on every request. An exception that escapes
    the app is answered as a server would answer it, not raised into the test."""
    app = app or create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
            base_url=BASE_URL,
            timeout=60,
            headers=AUTH if headers is None else headers,
        ) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def settings(amqp_url: str, mongo_url: str) -> Settings:
    return gateway_settings(amqp_url, mongo_url, max_message_bytes=MAX_BODY)


@pytest.fixture(scope="module")
async def http(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running(settings) as client:
        yield client


@pytest.fixture(scope="module")
async def orders(settings: Settings, mongo_url: str) -> AsyncIterator[AsyncCollection[Document]]:
    """The gateway's `orders` collection, read directly; the database goes at the end."""
    client = connect(mongo_url)
    try:
        yield database(client, settings.mongo_database)[ORDERS]
    finally:
        await client.drop_database(settings.mongo_database)
        await client.close()


@pytest.fixture(scope="module")
async def amqp(amqp_url: str) -> AsyncIterator[AbstractRobustConnection]:
    connection = await aio_pika.connect_robust(amqp_url)
    async with connection:
        yield connection


@dataclass(frozen=True)
class Event:
    routing_key: str
    body: dict[str, Any]
    message_id: str | None
    correlation_id: str | None
    content_type: str | None

    @property
    def order_id(self) -> int | None:
        """The database id of the order the event is about."""
        order = self.body.get("order")
        value = order["id"] if isinstance(order, dict) else self.body.get("id")
        return value if isinstance(value, int) else None


@dataclass
class EventTap:
    """An exclusive queue bound to the events exchange with `order.#`, declared before acting."""

    queue: AbstractQueue
    events: list[Event] = field(default_factory=list)
    _barriers: set[str] = field(default_factory=set)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        async with self._changed:
            if message.routing_key == self.queue.name:  # a barrier, sent straight to the queue
                self._barriers.add(message.body.decode())
            else:
                self.events.append(
                    Event(
                        message.routing_key or "",
                        json.loads(message.body),
                        message.message_id,
                        message.correlation_id,
                        message.content_type,
                    )
                )
            self._changed.notify_all()

    def of(self, order_id: int, routing_key: str | None = None) -> list[Event]:
        return [
            event
            for event in self.events
            if event.order_id == order_id and routing_key in (None, event.routing_key)
        ]

    async def wait_for(
        self, order_id: int, count: int, routing_key: str | None = None
    ) -> list[Event]:
        """The first `count` events of the order (of `routing_key`), once they arrived."""
        async with asyncio.timeout(WAIT_SECONDS), self._changed:
            await self._changed.wait_for(lambda: len(self.of(order_id, routing_key)) >= count)
        return self.of(order_id, routing_key)

    async def drain(self, channel: aio_pika.abc.AbstractChannel) -> None:
        """Return once everything routed to the queue before now has arrived: a marker sent
        through the default exchange queues up behind it."""
        marker = uuid.uuid4().hex
        await channel.default_exchange.publish(
            aio_pika.Message(marker.encode()), routing_key=self.queue.name
        )
        async with asyncio.timeout(WAIT_SECONDS), self._changed:
            await self._changed.wait_for(lambda: marker in self._barriers)


@pytest.fixture
async def events(
    http: httpx.AsyncClient, amqp: AbstractRobustConnection, settings: Settings
) -> AsyncIterator[tuple[EventTap, aio_pika.abc.AbstractChannel]]:
    """Events from now on. Depends on `http`: the gateway has declared the exchange."""
    channel = await amqp.channel()
    queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
    await queue.bind(settings.events_exchange, routing_key="order.#")
    tap = EventTap(queue)
    await queue.consume(tap.on_message, no_ack=True)
    try:
        yield tap, channel
    finally:
        await channel.close()


# -- helpers --------------------------------------------------------------------------------------


def example_order() -> dict[str, Any]:
    body: dict[str, Any] = json.loads(EXAMPLE_ORDER.read_text())
    return body


def new_customer() -> str:
    return f"CUST-HTTP-{uuid.uuid4().hex[:10]}"


def simple_order(customer_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "customer_id": customer_id,
        "items": [
            {"product_id": 7, "product_name": "Oven cleaning", "quantity": 2, "price": "12.50"}
        ],
        "billing": {"first_name": "Ada", "last_name": "Byron", "email": "ada@example.com"},
        **fields,
    }


def error_of(response: httpx.Response, status: int, code: str) -> Any:
    """Assert the contract's error envelope with this status and code; return its details."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"success", "message", "error"}, body
    assert body["success"] is False
    assert isinstance(body["message"], str)
    assert body["message"]
    assert set(body["error"]) == {"code", "details"}, body
    assert body["error"]["code"] == code, body
    return body["error"]["details"]


def locs(details: Any) -> list[list[str | int]]:
    assert isinstance(details, list)
    assert details
    for detail in details:
        assert set(detail) == {"loc", "msg"}
        assert isinstance(detail["msg"], str)
    return [detail["loc"] for detail in details]


async def place(http: httpx.AsyncClient, body: dict[str, Any], **headers: str) -> dict[str, Any]:
    response = await http.post(PLACE, json=body, headers=headers)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


async def act(
    http: httpx.AsyncClient, id: int, body: dict[str, Any], **headers: str
) -> httpx.Response:
    return await http.post(f"/api/orders/{id}/action", json=body, headers=headers)


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not await check():
        assert time.monotonic() < deadline, f"{what} not reached within {WAIT_SECONDS}s"
        await asyncio.sleep(0.05)


async def all_published(orders: AsyncCollection[Document]) -> None:
    """Once the events feed has published every event written."""

    async def none_left() -> bool:
        return await backlog(orders.database) == 0

    await eventually(none_left, "every event published")


# -- the documented flow --------------------------------------------------------------------------


async def test_example_flow_answers_and_publishes_like_the_documentation(
    http: httpx.AsyncClient,
    events: tuple[EventTap, aio_pika.abc.AbstractChannel],
    orders: AsyncCollection[Document],
) -> None:
    tap, _ = events
    correlation = {step: f"{step}-{uuid.uuid4()}" for step in ("place", "start", "complete")}

    placed = await http.post(
        PLACE, json=example_order(), headers={"X-Correlation-ID": correlation["place"]}
    )
    assert placed.status_code == 201, placed.text
    assert placed.headers["X-Correlation-ID"] == correlation["place"]
    reply = placed.json()
    assert reply["success"] is True
    assert reply["message"] == "Order placed successfully"
    order = reply["data"]
    assert order["customer_id"] == "CUST-12345"
    assert (order["subtotal"], order["total_tax"], order["total"]) == ("300.00", "0.00", "300.00")
    assert (order["currency"], order["currency_symbol"]) == ("EUR", "€")
    assert (order["status"], order["version"]) == ("pending", 1)
    assert [item["price"] for item in order["items"]] == ["150.00", "75.00"]
    assert order["items"][0]["metadata"] == {"filter_options": [1, 2, 3]}
    assert order["metadata"] == {"source": "webform", "campaign_id": "SUMMER2025"}
    assert order["order_id"] >= 100_000
    assert order["status_history"][0]["from"] is None
    id = order["id"]

    started = await act(
        http,
        id,
        {"action": "update_status", "status": "in_progress", "notes": "Crew on site"},
        **{"X-Correlation-ID": correlation["start"]},
    )
    assert started.status_code == 200, started.text
    assert started.headers["X-Correlation-ID"] == correlation["start"]
    assert started.json()["message"] == "Action update_status applied"
    assert (started.json()["data"]["status"], started.json()["data"]["version"]) == (
        "in_progress",
        2,
    )

    completed = await act(
        http, id, {"action": "complete"}, **{"X-Correlation-ID": correlation["complete"]}
    )
    assert completed.status_code == 200, completed.text
    assert completed.headers["X-Correlation-ID"] == correlation["complete"]
    assert (completed.json()["data"]["status"], completed.json()["data"]["version"]) == (
        "completed",
        3,
    )
    history = completed.json()["data"]["status_history"]
    assert [(entry["from"], entry["to"], entry["action"]) for entry in history] == [
        (None, "pending", "place"),
        ("pending", "in_progress", "update_status"),
        ("in_progress", "completed", "complete"),
    ]

    fetched = await http.get(f"/api/orders/{id}")
    assert fetched.status_code == 200
    assert fetched.json() == {"success": True, "data": completed.json()["data"]}

    listed = await http.get(LIST, params={"customer_id": "CUST-12345", "status": "completed"})
    assert listed.status_code == 200, listed.text
    assert [o["id"] for o in listed.json()["data"]] == [id]
    assert listed.json()["pagination"] == {
        "current_page": 1,
        "per_page": 15,
        "total": 1,
        "last_page": 1,
    }

    for path in ("/api/orders/stats", "/api/orders/stats/overview"):
        stats = await http.get(path, params={"customer_id": "CUST-12345"})
        assert stats.status_code == 200, stats.text
        data = json.loads(stats.text, parse_float=Decimal)["data"]
        assert (data["total_orders"], data["completed_orders"], data["active_orders"]) == (1, 1, 0)
        assert data["total_revenue"] == Decimal("300.00")
        assert data["average_order_value"] == Decimal("300.00")
        assert data["status_breakdown"]["completed"] == 1
        assert sum(data["status_breakdown"].values()) == 1
        assert [c["customer_id"] for c in data["top_customers"]] == ["CUST-12345"]

    statuses = await http.get("/api/orders/meta/statuses")
    available = await http.get("/api/orders/statuses/available")
    assert statuses.status_code == available.status_code == 200
    assert statuses.json() == available.json()
    assert statuses.json()["data"] == [
        "pending",
        "processing",
        "confirmed",
        "in_progress",
        "completed",
        "cancelled",
        "refunded",
        "on_hold",
    ]

    published = await tap.wait_for(id, 3)
    assert [event.routing_key for event in published] == [
        "order.placed",
        "order.status_changed",
        "order.status_changed",
    ]
    placed_event, start_event, complete_event = published
    assert placed_event.body["event_type"] == "order.placed"
    assert placed_event.body["order"] == order
    assert [
        (e.body["from_status"], e.body["to_status"], e.body["action"], e.body["version"])
        for e in (start_event, complete_event)
    ] == [
        ("pending", "in_progress", "update_status", 2),
        ("in_progress", "completed", "complete", 3),
    ]
    assert start_event.body["notes"] == "Crew on site"
    assert [e.correlation_id for e in published] == list(correlation.values())
    event_ids = [e.body["event_id"] for e in published]
    assert len(set(event_ids)) == 3
    assert [e.message_id for e in published] == event_ids
    assert {e.content_type for e in published} == {"application/json"}
    await all_published(orders)


async def test_a_request_without_correlation_id_gets_one_and_its_event_carries_it(
    http: httpx.AsyncClient, events: tuple[EventTap, aio_pika.abc.AbstractChannel]
) -> None:
    tap, _ = events
    response = await http.post(PLACE, json=simple_order(new_customer()))
    assert response.status_code == 201
    generated = response.headers["X-Correlation-ID"]
    assert generated
    (event,) = await tap.wait_for(response.json()["data"]["id"], 1)
    assert event.correlation_id == generated


@pytest.mark.parametrize(
    "given",
    ["é" * 200, "x" * 201, "with space", "tab\there"],
    ids=["latin-1", "too-long", "space", "control"],
)
async def test_a_correlation_id_that_could_not_travel_is_replaced_and_the_event_goes_out(
    http: httpx.AsyncClient,
    events: tuple[EventTap, aio_pika.abc.AbstractChannel],
    given: str,
) -> None:
    """An AMQP correlation id holds 255 bytes: 200 `é` (400 bytes of UTF-8) once kept the
    order's event from going out for good. Now the gateway makes a new id and says so."""
    tap, _ = events
    response = await http.post(
        PLACE,
        json=simple_order(new_customer()),
        headers={b"X-Correlation-ID": given.encode("latin-1")},
    )
    assert response.status_code == 201, response.text
    used = response.headers["X-Correlation-ID"]
    assert used != given
    assert uuid.UUID(used)
    (event,) = await tap.wait_for(response.json()["data"]["id"], 1)
    assert event.correlation_id == used


# -- idempotency ----------------------------------------------------------------------------------


async def test_idempotency_key_on_place_returns_the_first_order_and_creates_nothing(
    http: httpx.AsyncClient,
    events: tuple[EventTap, aio_pika.abc.AbstractChannel],
    orders: AsyncCollection[Document],
) -> None:
    tap, channel = events
    customer = new_customer()
    key = f"key-{uuid.uuid4()}"

    first = await http.post(PLACE, json=simple_order(customer), headers={"Idempotency-Key": key})
    again = await http.post(PLACE, json=simple_order(customer), headers={"Idempotency-Key": key})
    in_body = await http.post(PLACE, json=simple_order(customer, idempotency_key=key))

    assert first.status_code == 201, first.text
    assert again.status_code == 200, again.text
    assert again.json()["message"] == "Order already placed"
    assert in_body.status_code == 200, in_body.text
    id = first.json()["data"]["id"]
    assert again.json()["data"]["id"] == in_body.json()["data"]["id"] == id
    assert again.json()["data"]["order_id"] == first.json()["data"]["order_id"]
    assert await orders.count_documents({"customer_id": customer}) == 1

    await tap.wait_for(id, 1, "order.placed")
    await tap.drain(channel)
    placed = [e for e in tap.events if e.body.get("order", {}).get("customer_id") == customer]
    assert [e.order_id for e in placed] == [id]


async def test_idempotency_key_on_an_action_applies_it_once(
    http: httpx.AsyncClient,
    events: tuple[EventTap, aio_pika.abc.AbstractChannel],
) -> None:
    tap, channel = events
    id = (await place(http, simple_order(new_customer())))["id"]
    key = f"action-{uuid.uuid4()}"
    action = {"action": "update_status", "status": "confirmed"}

    first = await act(http, id, action, **{"Idempotency-Key": key})
    again = await act(http, id, action, **{"Idempotency-Key": key})
    in_body = await act(http, id, action | {"request_id": key})

    assert first.status_code == again.status_code == in_body.status_code == 200
    assert [r.json()["data"]["version"] for r in (first, again, in_body)] == [2, 2, 2]
    stored = (await http.get(f"/api/orders/{id}")).json()["data"]
    assert (stored["status"], stored["version"], len(stored["status_history"])) == (
        "confirmed",
        2,
        2,
    )
    await tap.wait_for(id, 1, "order.status_changed")
    await tap.drain(channel)
    assert len(tap.of(id, "order.status_changed")) == 1


async def test_an_idempotency_key_reused_with_another_body_is_a_422_conflict(
    http: httpx.AsyncClient,
    events: tuple[EventTap, aio_pika.abc.AbstractChannel],
    orders: AsyncCollection[Document],
) -> None:
    tap, channel = events
    customer, other = new_customer(), new_customer()
    key = f"key-{uuid.uuid4()}"
    first = await place(http, simple_order(customer), **{"Idempotency-Key": key})

    conflict = await http.post(PLACE, json=simple_order(other), headers={"Idempotency-Key": key})
    assert error_of(conflict, 422, "idempotency_conflict") == {"key": key}
    assert "Ada" not in conflict.text  # nothing of the first order's billing
    assert await orders.count_documents({"customer_id": {"$in": [customer, other]}}) == 1

    id = first["id"]
    action_key = f"action-{uuid.uuid4()}"
    applied = await act(http, id, {"action": "cancel"}, **{"Idempotency-Key": action_key})
    assert applied.status_code == 200, applied.text
    refused = await act(
        http,
        id,
        {"action": "update_status", "status": "on_hold"},
        **{"Idempotency-Key": action_key},
    )
    assert error_of(refused, 422, "idempotency_conflict") == {"key": action_key}
    stored = (await http.get(f"/api/orders/{id}")).json()["data"]
    assert (stored["status"], stored["version"]) == ("cancelled", 2)
    await tap.wait_for(id, 1, "order.status_changed")
    await tap.drain(channel)
    assert len(tap.of(id, "order.status_changed")) == 1


async def test_an_idempotency_key_that_differs_from_the_body_is_refused(
    http: httpx.AsyncClient, orders: AsyncCollection[Document]
) -> None:
    customer = new_customer()
    refused = await http.post(
        PLACE,
        json=simple_order(customer, idempotency_key="in-the-body"),
        headers={"Idempotency-Key": "in-the-header"},
    )
    assert locs(error_of(refused, 422, "validation_error")) == [["idempotency_key"]]
    assert await orders.count_documents({"customer_id": customer}) == 0

    same = await http.post(
        PLACE,
        json=simple_order(customer, idempotency_key=f"same-{customer}"),
        headers={"Idempotency-Key": f"same-{customer}"},
    )
    assert same.status_code == 201, same.text
    id = same.json()["data"]["id"]

    action = {"action": "update_status", "status": "confirmed", "request_id": "in-the-body"}
    refused = await act(http, id, action, **{"Idempotency-Key": "in-the-header"})
    assert locs(error_of(refused, 422, "validation_error")) == [["request_id"]]
    assert (await http.get(f"/api/orders/{id}")).json()["data"]["version"] == 1

    empty = await http.post(PLACE, json=simple_order(customer), headers={"Idempotency-Key": ""})
    assert locs(error_of(empty, 422, "validation_error")) == [["header", "Idempotency-Key"]]


# -- errors ---------------------------------------------------------------------------------------


async def test_bodies_that_are_not_a_json_object_are_bad_requests_and_too_large_ones_413(
    http: httpx.AsyncClient, orders: AsyncCollection[Document]
) -> None:
    id = (await place(http, simple_order(new_customer())))["id"]
    for path in (PLACE, f"/api/orders/{id}/action"):
        for content in (b"not json", b"[1, 2]", b'"text"', b"", b'{"a": "\xff"}'):
            response = await http.post(
                path, content=content, headers={"content-type": "application/json"}
            )
            error_of(response, 400, "bad_request")

    customer = new_customer()
    large = simple_order(customer, notes="x" * MAX_BODY)
    declared = await http.post(PLACE, json=large)
    assert int(declared.request.headers["content-length"]) > MAX_BODY
    error_of(declared, 413, "bad_request")
    assert declared.json()["message"].endswith(f"the limit is {MAX_BODY}")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: read until the limit
        yield json.dumps(large).encode()[:1000]
        yield json.dumps(large).encode()[1000:]

    streamed = await http.post(PLACE, content=chunks(), headers=JSON_TYPE)
    assert "content-length" not in streamed.request.headers
    assert streamed.request.headers["transfer-encoding"] == "chunked"
    error_of(streamed, 413, "bad_request")
    action = await http.post(f"/api/orders/{id}/action", content=chunks(), headers=JSON_TYPE)
    error_of(action, 413, "bad_request")
    assert await orders.count_documents({"customer_id": customer}) == 0

    just_fits = simple_order(customer)
    just_fits["notes"] = "x" * (MAX_BODY - len(json.dumps(just_fits | {"notes": ""})))
    assert len(json.dumps(just_fits).encode()) == MAX_BODY
    fits = await http.post(PLACE, content=json.dumps(just_fits).encode(), headers=JSON_TYPE)
    assert fits.status_code == 201, fits.text


async def test_unknown_orders_are_not_found(http: httpx.AsyncClient) -> None:
    assert error_of(await http.get("/api/orders/987654321"), 404, "not_found") == {"id": 987654321}
    error_of(await act(http, 987654321, {"action": "complete"}), 404, "not_found")
    error_of(await http.get("/api/orders/nothing/here"), 404, "not_found")


async def test_refused_transitions_and_versions_are_conflicts_that_change_nothing(
    http: httpx.AsyncClient,
) -> None:
    id = (await place(http, simple_order(new_customer())))["id"]

    refused = await act(http, id, {"action": "complete"})
    assert error_of(refused, 409, "invalid_transition") == {
        "from": "pending",
        "to": "completed",
        "allowed": PENDING_ALLOWED,
    }

    stale = await act(
        http, id, {"action": "update_status", "status": "confirmed", "expected_version": 7}
    )
    assert error_of(stale, 409, "version_conflict")["current_version"] == 1

    stored = (await http.get(f"/api/orders/{id}")).json()["data"]
    assert (stored["status"], stored["version"]) == ("pending", 1)

    current = await act(
        http, id, {"action": "update_status", "status": "confirmed", "expected_version": 1}
    )
    assert current.status_code == 200, current.text
    assert current.json()["data"]["version"] == 2


async def test_invalid_bodies_are_validation_errors_with_their_location(
    http: httpx.AsyncClient, orders: AsyncCollection[Document]
) -> None:
    customer = new_customer()
    missing = simple_order(customer)
    del missing["items"]
    assert ["items"] in locs(
        error_of(await http.post(PLACE, json=missing), 422, "validation_error")
    )

    bad_email = simple_order(customer)
    bad_email["billing"]["email"] = "not-an-email"
    details = error_of(await http.post(PLACE, json=bad_email), 422, "validation_error")
    assert locs(details) == [["billing", "email"]]
    assert await orders.count_documents({"customer_id": customer}) == 0

    id = (await place(http, simple_order(customer)))["id"]
    unknown = await act(http, id, {"action": "teleport"})
    assert error_of(unknown, 422, "unknown_action")["action"] == "teleport"

    no_status = await act(http, id, {"action": "update_status"})
    assert locs(error_of(no_status, 422, "validation_error")) == [["status"]]

    for name, value in (("id", id), ("order_id", 123456), ("id", id + 1)):
        named = await act(http, id, {"action": "complete", name: value})
        assert locs(error_of(named, 422, "validation_error")) == [[name]]
    assert (await http.get(f"/api/orders/{id}")).json()["data"]["version"] == 1


@pytest.mark.parametrize(
    ("query", "loc"),
    [
        ("per_page=abc", "per_page"),
        ("per_page=0", "per_page"),
        ("per_page=101", "per_page"),
        ("page=1&page=2", "page"),
        ("active_only=yes", "active_only"),
        ("status=flying", "status"),
        ("status=pending&status=flying", "status"),
        ("order_by=password", "order_by"),
        ("date_from=2025-13-01", "date_from"),
        ("colour=blue", "colour"),
    ],
)
async def test_bad_query_parameters_are_validation_errors(
    http: httpx.AsyncClient, query: str, loc: str
) -> None:
    for path in (LIST, "/api/orders/stats"):
        details = error_of(await http.get(f"{path}?{query}"), 422, "validation_error")
        assert any(loc in map(str, where) for where in locs(details)), details


async def test_a_method_a_path_does_not_serve_is_405_not_an_order_id(
    http: httpx.AsyncClient,
) -> None:
    for method, path, allowed in (
        ("GET", "/api/orders/place", "POST"),
        ("POST", "/api/orders/list", "GET"),
        ("DELETE", "/api/orders/stats", "GET"),
        ("PUT", "/api/orders/1", "GET"),
    ):
        refused = await http.request(method, path)
        assert refused.status_code == 405, (method, path, refused.text)
        assert refused.headers["Allow"] == allowed
        assert refused.json()["error"]["code"] == "bad_request"


async def test_unknown_query_parameters_are_refused_on_every_route(
    http: httpx.AsyncClient,
) -> None:
    id = (await place(http, simple_order(new_customer())))["id"]
    for path in (
        LIST,
        "/api/orders/stats",
        "/api/orders/stats/overview",
        "/api/orders/meta/statuses",
        "/api/orders/statuses/available",
        f"/api/orders/{id}",
    ):
        details = error_of(await http.get(f"{path}?colour=blue"), 422, "validation_error")
        assert locs(details) == [["colour"]], (path, details)
    # the paging of the list is not a filter of the stats
    error_of(await http.get("/api/orders/stats?page=1"), 422, "validation_error")


async def test_path_ids_that_are_not_positive_integers_are_validation_errors(
    http: httpx.AsyncClient,
) -> None:
    for id in ("abc", "1.5", "0", "-3", str(2**63)):
        refused = await http.get(f"/api/orders/{id}", headers={"X-Correlation-ID": f"id-{id}"})
        assert refused.headers["X-Correlation-ID"] == f"id-{id}"
        details = error_of(refused, 422, "validation_error")
        assert locs(details) == [["path", "id"]], (id, details)
        details = error_of(await act_raw(http, id), 422, "validation_error")
        assert ["path", "id"] in locs(details), (id, details)


async def act_raw(http: httpx.AsyncClient, id: str) -> httpx.Response:
    return await http.post(f"/api/orders/{id}/action", json={"action": "complete"})


# -- query parsing --------------------------------------------------------------------------------


async def test_list_reads_repeated_statuses_booleans_and_paging(http: httpx.AsyncClient) -> None:
    customer = new_customer()
    ids = {
        status: (await place(http, simple_order(customer, status=status)))["id"]
        for status in ("pending", "completed", "cancelled")
    }

    async def listed(query: str) -> dict[str, Any]:
        response = await http.get(f"{LIST}?customer_id={customer}&order_by=id&{query}")
        assert response.status_code == 200, response.text
        reply: dict[str, Any] = response.json()
        return reply

    both = await listed("status=pending&status=completed&order_direction=asc")
    assert [(o["id"], o["status"]) for o in both["data"]] == [
        (ids["pending"], "pending"),
        (ids["completed"], "completed"),
    ]
    assert both["pagination"]["total"] == 2

    single = await listed("status=cancelled")
    assert [o["id"] for o in single["data"]] == [ids["cancelled"]]

    active = await listed("active_only=true")
    assert [o["id"] for o in active["data"]] == [ids["pending"]]
    everything = await listed("active_only=false")
    assert everything["pagination"]["total"] == 3

    first = await listed("per_page=1&order_direction=asc")
    assert [o["id"] for o in first["data"]] == [ids["pending"]]
    assert first["pagination"] == {"current_page": 1, "per_page": 1, "total": 3, "last_page": 3}
    last = await listed("per_page=1&page=3&order_direction=asc")
    assert [o["id"] for o in last["data"]] == [ids["cancelled"]]
    assert last["pagination"]["current_page"] == 3

    stats = await http.get(
        "/api/orders/stats",
        params=[("customer_id", customer), ("status", "pending"), ("status", "completed")],
    )
    assert stats.status_code == 200, stats.text
    assert stats.json()["data"]["total_orders"] == 2
    assert stats.json()["data"]["cancelled_orders"] == 0


# -- money ----------------------------------------------------------------------------------------


async def test_amounts_are_exact_decimals(http: httpx.AsyncClient) -> None:
    customer = new_customer()
    three = simple_order(customer)
    three["items"] = [
        {"product_id": 1, "product_name": "Dime", "quantity": 3, "price": "0.10"},
    ]
    order = await place(http, three)
    assert (order["subtotal"], order["total"], order["items"][0]["price"]) == (
        "0.30",
        "0.30",
        "0.10",
    )

    # JSON numbers are read as decimals too: 0.1 + 0.1 + 0.1 as floats is 0.30000000000000004
    items = ",".join(
        f'{{"product_id": {n}, "product_name": "Dime", "quantity": 1, "price": 0.10}}'
        for n in range(3)
    )
    raw = (
        f'{{"customer_id": "{customer}", "items": [{items}], "total_tax": 0.20, '
        '"billing": {"first_name": "Ada", "last_name": "Byron", "email": "ada@example.com"}}'
    )
    response = await http.post(PLACE, content=raw.encode(), headers=JSON_TYPE)
    assert response.status_code == 201, response.text
    order = response.json()["data"]
    assert (order["subtotal"], order["total_tax"], order["total"]) == ("0.30", "0.20", "0.50")

    for where, body in (
        (["items", 0, "price"], three | {"items": [three["items"][0] | {"price": "0.105"}]}),
        (["items", 0, "price"], three | {"items": [three["items"][0] | {"price": 1.005}]}),
        (["total"], three | {"total": "1.001"}),
    ):
        details = error_of(await http.post(PLACE, json=body), 422, "validation_error")
        assert where in locs(details), details


# -- concurrency ----------------------------------------------------------------------------------


async def test_concurrent_actions_with_one_expected_version_succeed_once(
    http: httpx.AsyncClient, events: tuple[EventTap, aio_pika.abc.AbstractChannel]
) -> None:
    tap, channel = events
    id = (await place(http, simple_order(new_customer())))["id"]
    targets = [PENDING_ALLOWED[n % len(PENDING_ALLOWED)] for n in range(20)]

    responses = await asyncio.gather(
        *(
            act(http, id, {"action": "update_status", "status": status, "expected_version": 1})
            for status in targets
        )
    )

    codes = sorted(r.status_code for r in responses)
    assert codes == [200] + [409] * 19, [r.text for r in responses if r.status_code != 409]
    (winner,) = [r.json()["data"] for r in responses if r.status_code == 200]
    for refused in (r for r in responses if r.status_code == 409):
        assert error_of(refused, 409, "version_conflict")["current_version"] == 2
    stored = (await http.get(f"/api/orders/{id}")).json()["data"]
    assert (stored["status"], stored["version"]) == (winner["status"], 2)
    assert len(stored["status_history"]) == 2

    await tap.wait_for(id, 1, "order.status_changed")
    await tap.drain(channel)
    (changed,) = tap.of(id, "order.status_changed")
    assert (changed.body["from_status"], changed.body["to_status"]) == ("pending", winner["status"])


# -- MongoDB unavailable --------------------------------------------------------------------------


async def count_orders(mongo_url: str, database_name: str, customer: str) -> int:
    client: AsyncMongoClient[Document] = connect(mongo_url)
    try:
        return await client[database_name][ORDERS].count_documents({"customer_id": customer})
    finally:
        await client.close()


async def test_mongodb_down_is_503_and_the_same_request_later_places_once(
    amqp_url: str, private_mongo: EmbeddedMongo
) -> None:
    settings = gateway_settings(amqp_url, private_mongo.url, api_retry_seconds=1)
    customer = new_customer()
    key = f"outage-{uuid.uuid4()}"
    body = simple_order(customer)
    headers = {"Idempotency-Key": key, "X-Correlation-ID": f"outage-{customer}"}
    async with running(settings) as http:
        await asyncio.to_thread(private_mongo.stop)
        try:
            refused = await http.post(PLACE, json=body, headers=headers)
        finally:
            await asyncio.to_thread(private_mongo.restart)

        assert error_of(refused, 503, "internal_error") is None
        assert int(refused.headers["Retry-After"]) > 0
        assert refused.headers["X-Correlation-ID"] == headers["X-Correlation-ID"]
        assert "mongodb://" not in refused.text
        assert str(private_mongo.port) not in refused.text
        assert await count_orders(private_mongo.url, settings.mongo_database, customer) == 0

        placed = await http.post(PLACE, json=body, headers=headers)
        assert placed.status_code == 201, placed.text
        again = await http.post(PLACE, json=body, headers=headers)
        assert again.status_code == 200, again.text
        assert again.json()["data"]["id"] == placed.json()["data"]["id"]
        assert await count_orders(private_mongo.url, settings.mongo_database, customer) == 1


class RetrySeen(logging.Handler):
    """Notices the gateway's "storage unavailable ...; retrying" line."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("storage unavailable"):
            self.seen.set()


@contextlib.contextmanager
def watching_retries() -> Iterator[asyncio.Event]:
    logger = logging.getLogger("service.worker.delivery")
    handler = RetrySeen()
    logger.addHandler(handler)
    try:
        yield handler.seen
    finally:
        logger.removeHandler(handler)


async def test_an_outage_shorter_than_api_retry_seconds_is_waited_out(
    amqp_url: str, private_mongo: EmbeddedMongo
) -> None:
    """The request fails once, is retried with the body it already read, and succeeds."""
    settings = gateway_settings(amqp_url, private_mongo.url, api_retry_seconds=60)
    customer = new_customer()
    async with running(settings) as http:
        with watching_retries() as retried:
            await asyncio.to_thread(private_mongo.stop)
            try:
                request = asyncio.create_task(
                    http.post(
                        PLACE, json=simple_order(customer), headers={"Idempotency-Key": customer}
                    )
                )
                async with asyncio.timeout(30):
                    await retried.wait()
                assert not request.done()
            finally:
                await asyncio.to_thread(private_mongo.restart)
            response = await request
        assert response.status_code == 201, response.text
        assert await count_orders(private_mongo.url, settings.mongo_database, customer) == 1


async def test_the_503_comes_within_api_retry_seconds(
    amqp_url: str, private_mongo: EmbeddedMongo
) -> None:
    settings = gateway_settings(amqp_url, private_mongo.url, api_retry_seconds=1)
    async with running(settings) as http:
        await asyncio.to_thread(private_mongo.stop)
        try:
            started = time.monotonic()
            refused = await http.post(PLACE, json=simple_order(new_customer()))
            elapsed = time.monotonic() - started
        finally:
            await asyncio.to_thread(private_mongo.restart)
    assert refused.status_code == 503
    assert elapsed < settings.api_retry_seconds + 1.5
