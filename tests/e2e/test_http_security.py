"""The HTTP gateway as a process (``python -m service.gateway``, as ``make http`` runs it)
against hostile callers: no key, a cross-site simple POST, oversized bodies with and without
Content-Length, a stored document that breaks the code; and its health, metrics and docs.

No worker is needed: the gateway opens the store and publishes its events itself.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from .contract import new_customer_id, simple_order
from .gateway import Gateway, start_gateway, stop_gateway, wait_until_serving

LIMIT = 256 * 1024
"""The contract's body limit (the default ORDERS_MAX_MESSAGE_BYTES)."""
TIMEOUT = 15.0
JSON = {"Content-Type": "application/json"}
ORDER_ROUTES = [
    ("POST", "/api/orders/place"),
    ("GET", "/api/orders/1"),
    ("POST", "/api/orders/1/action"),
    ("GET", "/api/orders/list"),
    ("GET", "/api/orders/stats"),
    ("GET", "/api/orders/meta/statuses"),
]


def started(amqp_url: str, mongo_url: str, log_dir: Path, **extra_env: str) -> Iterator[Gateway]:
    database = f"e2e_http_security_{uuid.uuid4().hex[:10]}"
    gateway = start_gateway(amqp_url, mongo_url, database, log_dir / "gateway.log", extra_env)
    try:
        wait_until_serving(gateway)
        yield gateway
    finally:
        code = stop_gateway(gateway)
        mongo: MongoClient[dict[str, Any]] = MongoClient(mongo_url)
        with mongo:
            mongo.drop_database(database)
    assert code == 0, f"exit code {code}; log tail:\n{gateway.log_tail()}"


@pytest.fixture(scope="module")
def gateway(
    amqp_url: str, mongo_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    yield from started(amqp_url, mongo_url, tmp_path_factory.mktemp("e2e-http-security"))


@pytest.fixture
def http(gateway: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=TIMEOUT, headers=gateway.auth) as session:
        yield session


@pytest.fixture
def anonymous(gateway: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=TIMEOUT) as session:
        yield session


def refused(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == code
    return body


def placed(http: httpx.Client) -> dict[str, Any]:
    response = http.post("/api/orders/place", json=simple_order(new_customer_id()))
    assert response.status_code == 201, response.text
    order: dict[str, Any] = response.json()["data"]
    return order


def test_no_key_no_orders(anonymous: httpx.Client, http: httpx.Client) -> None:
    order = placed(http)
    for method, path in [*ORDER_ROUTES, ("GET", f"/api/orders/{order['id']}")]:
        content = b"{}" if method == "POST" else None
        response = anonymous.request(method, path, content=content, headers=JSON)
        refused(response, 401, "bad_request")
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="orders"'
        assert "customer" not in response.text
    with_api_key_header = anonymous.get(
        f"/api/orders/{order['id']}", headers={"X-API-Key": http.headers["Authorization"][7:]}
    )
    assert with_api_key_header.json()["data"]["id"] == order["id"]


def test_a_cross_site_simple_post_does_not_cancel_an_order(
    anonymous: httpx.Client, http: httpx.Client
) -> None:
    """The repro: a page elsewhere makes the browser POST `text/plain` to the gateway."""
    order = placed(http)
    forged = anonymous.post(
        f"/api/orders/{order['id']}/action",
        content=b'{"action": "cancel", "reason": "forged"}',
        headers={"Content-Type": "text/plain;charset=UTF-8", "Origin": "https://evil.example"},
    )
    refused(forged, 401, "bad_request")
    assert "access-control-allow-origin" not in forged.headers
    with_key = http.post(
        f"/api/orders/{order['id']}/action",
        content=b'{"action": "cancel"}',
        headers={"Content-Type": "text/plain"},
    )
    refused(with_key, 415, "bad_request")
    now = http.get(f"/api/orders/{order['id']}").json()["data"]
    assert (now["status"], now["version"]) == ("pending", 1)


def test_cors_preflights_get_no_grant(anonymous: httpx.Client) -> None:
    asked = anonymous.options(
        "/api/orders/1/action",
        headers={
            "Origin": "https://evil.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert asked.status_code >= 400
    assert not any(name.startswith("access-control-") for name in asked.headers)


def test_bodies_over_256_kib_are_413_with_or_without_content_length(http: httpx.Client) -> None:
    customer = new_customer_id()
    large = simple_order(customer, notes="x" * LIMIT)
    declared = http.post("/api/orders/place", json=large)
    assert int(declared.request.headers["content-length"]) > LIMIT
    refused(declared, 413, "bad_request")

    raw = httpx.Request("POST", "/", json=large).content

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(raw), 16 * 1024):
            yield raw[start : start + 16 * 1024]

    streamed = http.post("/api/orders/place", content=chunks(), headers=JSON)
    assert "content-length" not in streamed.request.headers
    assert streamed.request.headers["transfer-encoding"] == "chunked"
    refused(streamed, 413, "bad_request")
    listed = http.get("/api/orders/list", params={"customer_id": customer}).json()
    assert listed["pagination"]["total"] == 0


def test_an_unexpected_error_shows_nothing_internal(
    http: httpx.Client, gateway: Gateway, mongo_url: str
) -> None:
    id = 800_000_000 + uuid.uuid4().int % 1_000_000
    mongo: MongoClient[dict[str, Any]] = MongoClient(mongo_url)
    with mongo:
        mongo[gateway.database]["orders"].insert_one({"_id": id, "status": "s3cr3t-status"})
    response = http.get(f"/api/orders/{id}")
    body = refused(response, 500, "internal_error")
    assert body == {
        "success": False,
        "message": "Internal error",
        "error": {"code": "internal_error", "details": None},
    }
    for internal in ("Traceback", ".py", "s3cr3t", "File "):
        assert internal not in response.text
    assert "Traceback" in gateway.log_tail(200)


def test_health_metrics_and_docs_are_served_without_a_key(
    anonymous: httpx.Client, http: httpx.Client
) -> None:
    placed(http)
    ready = anonymous.get("/health/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ready", "checks": {"gateway": "ok", "mongo": "ok"}}
    assert anonymous.get("/health/live").json() == {"status": "alive"}
    metrics = anonymous.get("/metrics")
    assert metrics.status_code == 200
    assert (
        'orders_http_requests_total{method="POST",route="/api/orders/place",status="201"}'
        in metrics.text
    )
    docs = anonymous.get("/docs")
    assert docs.status_code == 200
    assert "cdn." not in docs.text
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert f'"/docs/assets/{asset}"' in docs.text
        assert anonymous.get(f"/docs/assets/{asset}").status_code == 200


def test_a_gateway_without_keys_answers_every_order_route_401_and_says_why(
    amqp_url: str, mongo_url: str, tmp_path: Path
) -> None:
    for gateway in started(amqp_url, mongo_url, tmp_path, ORDERS_API_KEY_HASHES="[]"):
        with httpx.Client(base_url=gateway.url, timeout=TIMEOUT, headers=gateway.auth) as http:
            for method, path in ORDER_ROUTES:
                content = b"{}" if method == "POST" else None
                response = http.request(method, path, content=content, headers=JSON)
                refused(response, 401, "bad_request")
            assert http.get("/health/ready").status_code == 200
        assert "no API key configured" in gateway.log_tail(200)
