"""The HTTP gateway against hostile callers, in process (httpx over ASGI, its lifespan
running) on the session's real mongod and RabbitMQ vhost: API keys, JSON-only bodies, CORS,
the body limit, internal errors without internals, health and metrics, and offline docs."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pymongo.asynchronous.collection import AsyncCollection

from devtools.embedded_mongo import EmbeddedMongo
from service.config import Settings
from service.gateway.app import create_app
from service.gateway.auth import key_digest, new_key
from service.store.client import ORDERS, Document, connect, database

from .test_http_gateway import (
    API_KEY,
    AUTH,
    JSON_TYPE,
    PLACE,
    error_of,
    gateway_settings,
    new_customer,
    place,
    running,
    simple_order,
)

ORDER_ROUTES = [
    ("POST", PLACE),
    ("GET", "/api/orders/1"),
    ("POST", "/api/orders/1/action"),
    ("GET", "/api/orders/list"),
    ("GET", "/api/orders/stats"),
    ("GET", "/api/orders/stats/overview"),
    ("GET", "/api/orders/meta/statuses"),
    ("GET", "/api/orders/statuses/available"),
]
OPEN_ROUTES = ["/health/live", "/health/ready", "/metrics", "/docs", "/redoc", "/openapi.json"]
ALLOWED_ORIGIN = "https://shop.example.com"
EVIL_ORIGIN = "https://evil.example"
URL_ATTRIBUTES = ("src", "href", "spec-url")


@pytest.fixture(scope="module")
def settings(amqp_url: str, mongo_url: str) -> Settings:
    return gateway_settings(amqp_url, mongo_url)


@pytest.fixture(scope="module")
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app


def client(app: FastAPI, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    """A client of the running `app`, sending `headers` (none by default: no key)."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
        base_url="http://gateway",
        headers=headers or {},
    )


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client(app, AUTH) as session:
        yield session


@pytest.fixture
async def anonymous(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client(app) as session:
        yield session


@pytest.fixture(scope="module")
async def orders(settings: Settings, mongo_url: str) -> AsyncIterator[AsyncCollection[Document]]:
    mongo = connect(mongo_url)
    try:
        yield database(mongo, settings.mongo_database)[ORDERS]
    finally:
        await mongo.drop_database(settings.mongo_database)
        await mongo.close()


async def stored(orders: AsyncCollection[Document], id: int) -> tuple[str, int]:
    doc = await orders.find_one({"_id": id})
    assert doc is not None
    return doc["status"], doc["version"]


async def call(http: httpx.AsyncClient, method: str, path: str, **headers: str) -> httpx.Response:
    body = b'{"action": "complete"}' if path.endswith("/action") else b"{}"
    content = body if method == "POST" else None
    return await http.request(method, path, content=content, headers=JSON_TYPE | headers)


# -- a cross-site "simple" POST ------------------------------------------------------------------


async def test_a_cross_site_simple_post_no_longer_cancels_an_order(
    http: httpx.AsyncClient, anonymous: httpx.AsyncClient, orders: AsyncCollection[Document]
) -> None:
    """What a page on another site can make a browser send without asking first (no CORS
    preflight): a POST with `Content-Type: text/plain`, no credentials but cookies, which the
    gateway does not use. It once cancelled the order."""
    id = (await place(http, simple_order(new_customer())))["id"]
    forged = await anonymous.post(
        f"/api/orders/{id}/action",
        content=b'{"action": "cancel", "reason": "forged"}',
        headers={"Content-Type": "text/plain", "Origin": EVIL_ORIGIN},
    )
    error_of(forged, 401, "bad_request")
    assert "access-control-allow-origin" not in forged.headers
    assert await stored(orders, id) == ("pending", 1)

    # Even with a key (which such a page cannot send), a simple content type is refused.
    for content_type in (
        "text/plain",
        "text/plain; charset=utf-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ):
        refused = await http.post(
            f"/api/orders/{id}/action",
            content=b'{"action": "cancel"}',
            headers={"Content-Type": content_type},
        )
        error_of(refused, 415, "bad_request")
    assert await stored(orders, id) == ("pending", 1)

    cancelled = await http.post(f"/api/orders/{id}/action", json={"action": "cancel"})
    assert cancelled.status_code == 200, cancelled.text
    assert await stored(orders, id) == ("cancelled", 2)


async def test_bodies_are_read_only_as_application_json(
    http: httpx.AsyncClient, orders: AsyncCollection[Document]
) -> None:
    customer = new_customer()
    body = httpx.Request("POST", "/", json=simple_order(customer)).content
    for content_type in (
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON;charset=UTF-8",
        'application/json; charset="utf-8"',
    ):
        placed = await http.post(PLACE, content=body, headers={"Content-Type": content_type})
        assert placed.status_code == 201, (content_type, placed.text)
    placed_so_far = await orders.count_documents({"customer_id": customer})
    assert placed_so_far == 4

    no_type = await http.post(PLACE, content=body)
    assert "content-type" not in no_type.request.headers
    error_of(no_type, 415, "bad_request")
    for content_type in (
        "application/json; charset=latin-1",
        "application/jsonp",
        "application/merge-patch+json",
        "text/json",
        "application/xml",
    ):
        refused = await http.post(PLACE, content=body, headers={"Content-Type": content_type})
        error_of(refused, 415, "bad_request")
    assert await orders.count_documents({"customer_id": customer}) == placed_so_far


# -- API keys ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), ORDER_ROUTES)
async def test_every_order_route_needs_a_key(
    anonymous: httpx.AsyncClient, method: str, path: str
) -> None:
    missing = await call(anonymous, method, path)
    error_of(missing, 401, "bad_request")
    assert "API key" in missing.json()["message"]
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="orders"'
    assert missing.headers["X-Correlation-ID"]

    for wrong in (
        {"Authorization": f"Bearer {API_KEY}x"},
        {"Authorization": f"Bearer {key_digest(API_KEY)}"},  # the digest is not the key
        {"Authorization": f"Basic {API_KEY}"},
        {"Authorization": API_KEY},
        {"X-API-Key": API_KEY[:-1]},
    ):
        refused = await call(anonymous, method, path, **wrong)
        error_of(refused, 401, "bad_request")
        assert API_KEY not in refused.text
        assert refused.headers["WWW-Authenticate"].startswith('Bearer realm="orders"')


async def test_missing_and_invalid_keys_are_told_apart(anonymous: httpx.AsyncClient) -> None:
    missing = await anonymous.get("/api/orders/meta/statuses")
    assert missing.json()["message"].startswith("Missing API key")
    invalid = await anonymous.get(
        "/api/orders/meta/statuses", headers={"Authorization": "Bearer not-a-key"}
    )
    assert invalid.json()["message"] == "Invalid API key"
    assert invalid.headers["WWW-Authenticate"] == 'Bearer realm="orders", error="invalid_token"'


@pytest.mark.parametrize(("method", "path"), ORDER_ROUTES)
async def test_a_key_as_bearer_token_or_x_api_key_is_accepted(
    anonymous: httpx.AsyncClient, method: str, path: str
) -> None:
    for header in ({"Authorization": f"Bearer {API_KEY}"}, {"X-API-Key": API_KEY}):
        response = await call(anonymous, method, path, **header)
        assert response.status_code not in (401, 403), response.text


async def test_health_metrics_and_docs_need_no_key(anonymous: httpx.AsyncClient) -> None:
    for path in OPEN_ROUTES:
        response = await anonymous.get(path)
        assert response.status_code == 200, (path, response.text)


async def test_a_gateway_without_keys_refuses_every_order_route(
    amqp_url: str, mongo_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = gateway_settings(amqp_url, mongo_url, api_key_hashes=frozenset())
    with caplog.at_level("WARNING", logger="service.gateway.app"):
        async with running(settings) as http:  # it sends API_KEY, of another gateway
            for method, path in ORDER_ROUTES:
                error_of(await call(http, method, path), 401, "bad_request")
            assert (await http.get("/health/ready")).status_code == 200
    assert any("no API key configured" in record.getMessage() for record in caplog.records)


async def test_several_keys_are_accepted_and_a_removed_one_is_not(
    amqp_url: str, mongo_url: str
) -> None:
    first, second, removed = new_key(), new_key(), new_key()
    settings = gateway_settings(
        amqp_url,
        mongo_url,
        # As an operator may paste them: upper-case hex is the same digest.
        api_key_hashes=frozenset({key_digest(first), key_digest(second).upper()}),
    )
    async with running(settings, headers={}) as http:
        for key in (first, second):
            ok = await http.get("/api/orders/meta/statuses", headers={"X-API-Key": key})
            assert ok.status_code == 200, ok.text
        refused = await http.get("/api/orders/meta/statuses", headers={"X-API-Key": removed})
        error_of(refused, 401, "bad_request")


# -- CORS ----------------------------------------------------------------------------------------


def preflight(origin: str) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }


async def test_cors_is_closed_by_default(anonymous: httpx.AsyncClient) -> None:
    for origin in (ALLOWED_ORIGIN, EVIL_ORIGIN):
        asked = await anonymous.options("/api/orders/1/action", headers=preflight(origin))
        assert asked.status_code >= 400
        assert not any(name.startswith("access-control-") for name in asked.headers), asked.headers
        simple = await anonymous.get("/api/orders/meta/statuses", headers={"Origin": origin})
        assert "access-control-allow-origin" not in simple.headers


async def test_cors_allows_only_the_configured_origins(amqp_url: str, mongo_url: str) -> None:
    settings = gateway_settings(amqp_url, mongo_url, api_cors_origins=(ALLOWED_ORIGIN,))
    async with running(settings) as http:
        allowed = await http.options("/api/orders/1/action", headers=preflight(ALLOWED_ORIGIN))
        assert allowed.status_code == 200, allowed.text
        assert allowed.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
        assert "POST" in allowed.headers["access-control-allow-methods"]
        granted = allowed.headers["access-control-allow-headers"].lower()
        assert {"authorization", "content-type", "x-api-key", "idempotency-key"} <= {
            name.strip() for name in granted.split(",")
        }
        assert "access-control-allow-credentials" not in allowed.headers

        other = await http.options("/api/orders/1/action", headers=preflight(EVIL_ORIGIN))
        assert other.status_code == 400
        assert "access-control-allow-origin" not in other.headers

        read = await http.get("/api/orders/meta/statuses", headers={"Origin": ALLOWED_ORIGIN})
        assert read.status_code == 200
        assert read.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
        assert "x-correlation-id" in read.headers["access-control-expose-headers"].lower()
        elsewhere = await http.get("/api/orders/meta/statuses", headers={"Origin": EVIL_ORIGIN})
        assert "access-control-allow-origin" not in elsewhere.headers


# -- no internals in any response ----------------------------------------------------------------


async def test_an_unexpected_error_is_an_internal_error_without_a_trace(
    http: httpx.AsyncClient, orders: AsyncCollection[Document], caplog: pytest.LogCaptureFixture
) -> None:
    """A stored document the code cannot read (written around the service) fails in a way
    nobody planned for: the reply is the envelope, the traceback only in the log."""
    id = 900_000_000 + uuid.uuid4().int % 1_000_000
    await orders.insert_one({"_id": id, "status": "no-such-status", "secret": "s3cr3t-field"})
    with caplog.at_level("ERROR"):
        response = await http.get(f"/api/orders/{id}")
    assert error_of(response, 500, "internal_error") is None
    assert response.json()["message"] == "Internal error"
    for internal in ("Traceback", 'File "', ".py", "s3cr3t", "no-such-status", "Error:"):
        assert internal not in response.text, internal
    assert any(record.exc_info for record in caplog.records), "the traceback is logged"


async def test_an_error_outside_the_routes_handling_is_the_envelope_too(
    settings: Settings,
) -> None:
    """The app-wide handler: whatever escapes a route (here one added for the test) is
    answered with the envelope, not Starlette's plain text or a trace."""
    app = create_app(settings)

    @app.get("/api/orders/boom/now", include_in_schema=False)
    async def boom() -> None:
        raise RuntimeError("boom: mongodb://user:password@db.internal:27017")

    async with running(settings, app=app) as http:
        response = await http.get("/api/orders/boom/now", headers={"X-Correlation-ID": "c-1"})
    assert error_of(response, 500, "internal_error") is None
    assert response.headers["X-Correlation-ID"] == "c-1"
    for internal in ("Traceback", "boom", "mongodb://", "password", "RuntimeError"):
        assert internal not in response.text, internal


# -- health and metrics --------------------------------------------------------------------------


async def test_health_reflects_mongodb(amqp_url: str, private_mongo: EmbeddedMongo) -> None:
    settings = gateway_settings(amqp_url, private_mongo.url)
    async with running(settings, headers={}) as http:
        ready = await http.get("/health/ready")
        assert ready.status_code == 200, ready.text
        assert ready.json() == {"status": "ready", "checks": {"gateway": "ok", "mongo": "ok"}}
        await asyncio.to_thread(private_mongo.stop)
        try:
            down = await http.get("/health/ready")
            live = await http.get("/health/live")
        finally:
            await asyncio.to_thread(private_mongo.restart)
        assert down.status_code == 503, down.text
        assert down.json()["status"] == "not ready"
        assert down.json()["checks"]["gateway"] == "ok"
        assert down.json()["checks"]["mongo"] != "ok"
        assert live.status_code == 200
        assert live.json() == {"status": "alive"}
        for _ in range(100):  # the server is back: ready again once a ping answers
            if (await http.get("/health/ready")).status_code == 200:
                break
            await asyncio.sleep(0.2)
        else:
            pytest.fail("not ready again after MongoDB came back")


def samples(text: str, name: str) -> dict[str, float]:
    """`{labels: value}` of metric `name` in a Prometheus text page."""
    found = re.findall(rf"^{name}\{{(.*)\}} (\S+)$", text, flags=re.MULTILINE)
    return {labels: float(value) for labels, value in found}


async def test_metrics_count_requests_by_route_and_status_and_the_events_published(
    http: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    await place(http, simple_order(new_customer()))
    await anonymous.get("/api/orders/meta/statuses")
    await http.request("BREW", "/api/orders/12345")
    await http.get("/no/such/path/12345")

    page = await anonymous.get("/metrics")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/plain")
    requests = samples(page.text, "orders_http_requests_total")
    placed = 'method="POST",route="/api/orders/place",status="201"'
    refused = 'method="GET",route="/api/orders/meta/statuses",status="401"'
    assert requests[placed] >= 1
    assert requests[refused] >= 1
    assert requests['method="other",route="/api/orders/{id}",status="405"'] >= 1
    assert requests['method="GET",route="other",status="404"'] >= 1
    assert "12345" not in " ".join(requests)  # paths as sent are not labels
    durations = samples(page.text, "orders_http_request_duration_seconds_count")
    assert durations['method="POST",route="/api/orders/place"'] >= 1
    assert "orders_outbox_backlog " in page.text

    async def published() -> float:
        text = (await anonymous.get("/metrics")).text
        return sum(
            value
            for labels, value in samples(text, "orders_published_messages_total").items()
            if 'destination="orders.events.order.placed"' in labels and "success" in labels
        )

    for _ in range(100):
        if await published() >= 1:
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("no order.placed event counted as published")


# -- /docs works offline -------------------------------------------------------------------------


class Assets(HTMLParser):
    """Every URL a page loads by itself: src, href and spec-url (ReDoc's document)
    attributes, `url: '...'` in its inline scripts (Swagger UI's document) and any absolute
    URL written in them."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in_script = tag == "script"
        self.urls += [value for name, value in attrs if name in URL_ATTRIBUTES and value]

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.urls += re.findall(r"""\burl:\s*['"]([^'"]+)['"]""", data)
            self.urls += re.findall(r"""https?://[^\s'"<>)]+""", data)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_the_docs_pages_load_only_what_the_gateway_serves(
    anonymous: httpx.AsyncClient, page: str
) -> None:
    html = await anonymous.get(page)
    assert html.status_code == 200
    assert "cdn" not in html.text.lower()
    assets = Assets()
    assets.feed(html.text)
    assert len(assets.urls) >= 3, assets.urls  # script, icon, document (and Swagger's styles)
    for url in assets.urls:
        assert url.startswith("/"), f"{page} loads {url} from elsewhere"
        assert not url.startswith("//"), url
        served = await anonymous.get(url)
        assert served.status_code == 200, (url, served.status_code)
        assert served.content, url
    assert "/openapi.json" in assets.urls
    if page == "/docs":
        assert any(url.endswith("swagger-ui-bundle.js") for url in assets.urls)
        assert any(url.endswith(".css") for url in assets.urls)


async def test_the_document_names_the_security_schemes(anonymous: httpx.AsyncClient) -> None:
    document: dict[str, Any] = (await anonymous.get("/openapi.json")).json()
    schemes = document["components"]["securitySchemes"]
    assert schemes["BearerToken"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schemes["BearerToken"]["description"],
    }
    assert (schemes["ApiKey"]["in"], schemes["ApiKey"]["name"]) == ("header", "X-API-Key")
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            assert operation["security"] == [{"BearerToken": []}, {"ApiKey": []}], (path, method)
            assert "WWW-Authenticate" in operation["responses"]["401"]["headers"]
    assert not any(path.startswith(("/health", "/metrics", "/docs")) for path in document["paths"])
