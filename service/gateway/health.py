"""The gateway's `/health/live`, `/health/ready` and `/metrics`, on its own port, with the
worker's answers (service/health.py) and metric names (service/metrics.py).

    GET /health/live   200 while the process answers
    GET /health/ready  200 when the gateway has started and is not stopping and MongoDB
                       answers a ping in time; 503 otherwise, the JSON body saying which
                       check failed (RabbitMQ is not a check: without it the gateway still
                       answers, and the events wait in their orders)
    GET /metrics       the registry in Prometheus text format: the requests by route, method
                       and status, their latency, the outbox backlog and the events published

None of them needs an API key, like the worker's health port; none is in the OpenAPI document.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import choose_encoder
from pymongo import AsyncMongoClient
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.health import OK, Phase, mongo_check
from service.metrics import PREFIX
from service.store.client import Document

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""Method labels as sent; any other method is counted as `other` (labels stay bounded)."""
OTHER_ROUTE = "other"
"""The route label of a request without a route template (a 404, a docs asset, the OpenAPI
document): paths as sent stay out of the labels."""


class GatewayHealth:
    """What the three endpoints read: the phase, the Mongo client, the registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.phase = Phase.STARTING
        self.client: AsyncMongoClient[Document] | None = None

    async def checks(self) -> dict[str, str]:
        return {
            "gateway": OK if self.phase is Phase.RUNNING else str(self.phase),
            "mongo": await mongo_check(self.client),
        }

    def router(self) -> APIRouter:
        router = APIRouter(include_in_schema=False)

        @router.get("/health/live")
        async def live() -> Response:
            return JSONResponse({"status": "alive"})

        @router.get("/health/ready")
        async def ready() -> Response:
            checks = await self.checks()
            ready = all(outcome == OK for outcome in checks.values())
            return JSONResponse(
                {"status": "ready" if ready else "not ready", "checks": checks},
                status_code=200 if ready else 503,
            )

        @router.get("/metrics")
        async def metrics(request: Request) -> Response:
            encode, content_type = choose_encoder(request.headers.get("accept", ""))
            return Response(encode(self.registry), headers={"Content-Type": content_type})

        return router


class RequestMetrics:
    """ASGI middleware: every HTTP request counted by route template, method and status, and
    timed; a request that raised counts as 500."""

    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter(
            "http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            namespace=PREFIX,
            registry=registry,
        )
        self.duration = Histogram(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by route template and method.",
            ["route", "method"],
            namespace=PREFIX,
            registry=registry,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route, method = _route(scope), _method(scope)
            self.requests.labels(route=route, method=method, status=str(status)).inc()
            self.duration.labels(route=route, method=method).observe(time.perf_counter() - started)


def _route(scope: Scope) -> str:
    """The template of the route the router matched (`/api/orders/{id}`), set by it on the
    scope this middleware passed down."""
    route: Any = scope.get("route")
    path = getattr(route, "path_format", None)
    return path if isinstance(path, str) else OTHER_ROUTE


def _method(scope: Scope) -> str:
    method = str(scope.get("method", ""))
    return method if method in METHODS else "other"
