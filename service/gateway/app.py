"""The HTTP app: FastAPI routes over the worker's handlers, one core per process.

Every route turns its request into the body the broker handler of the same name takes and
answers with the same envelope. A change made here writes its event into its order as well,
and the events feed (whichever process reads it) publishes it to the same events exchange.

The order routes need an API key (auth.py); health, metrics (health.py) and the docs, served
from a package rather than a CDN, do not. CORS is off unless origins are configured, and
whatever fails unexpectedly is answered with the envelope, never a trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response
from fastapi_offline import FastAPIOffline
from prometheus_client import CollectorRegistry
from pymongo import AsyncMongoClient
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException

from schemas.commands import PlaceOrder
from schemas.queries import ListOrders, ListStatuses, OrderStatsQuery
from service.adapters.publishing import publish_event
from service.amqp_connection import rabbit_broker
from service.application.delivery import Delivery
from service.application.errors import error_reply
from service.application.handlers import OrderHandlers, placed_reply
from service.application.parsing import parse
from service.application.retries import TransientExhausted, with_retries
from service.application.usecases import OrderService
from service.bootstrap import Core, open_core
from service.budget import ByteBudget
from service.config import Settings
from service.domain.errors import BadRequest, OrderError, ValidationFailed
from service.domain.records import PendingEvent
from service.gateway import openapi
from service.gateway.auth import API_KEY_HEADER, ApiKeys, authenticate
from service.gateway.health import GatewayHealth, RequestMetrics
from service.gateway.requests import RefusedBody, query_object, read_object, with_header
from service.health import Phase
from service.logs import configure_logging, log_context
from service.metrics import ServiceMetrics
from service.store.client import Document
from service.topology import topology
from service.wire import encode

log = logging.getLogger(__name__)

STATUS_OF_CODE = {
    "bad_request": 400,
    "not_found": 404,
    "invalid_transition": 409,
    "version_conflict": 409,
    "validation_error": 422,
    "unknown_action": 422,
    "idempotency_conflict": 422,
    "internal_error": 500,
}
UNAVAILABLE = "Storage unavailable; try again (with the same Idempotency-Key to be safe)"
RETRY_AFTER_SECONDS = 5
PUBLISH_TIMEOUT_SECONDS = 5.0
CORRELATION_HEADER = "X-Correlation-ID"
DOCS_ASSETS = "/docs/assets"
"""Where Swagger UI's script, styles and icon are served from (the `fastapi-offline`
package's copy): /docs loads nothing from elsewhere."""

OrderId = Annotated[int, Path(ge=1, le=2**62, description="The order's database id.", examples=[3])]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="Place: the order's idempotency_key. Action: its request_id. A repeated "
        "key with the same body returns the first outcome and changes nothing; with another "
        "body it is an idempotency_conflict (422).",
    ),
]


class OrderPathId(Convertor[str]):
    """`{id:order}`: any path segment but the names of the fixed routes beside it, so that
    `GET /api/orders/place` is a 405 (the path serves POST) and not an order id; a segment
    that is not a positive integer is then refused by the route's `Path` (422)."""

    regex = r"(?!(?:place|list|stats|meta|statuses)$)[^/]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("order", OrderPathId())


@dataclass(frozen=True)
class Answer:
    reply: dict[str, Any]
    status: int = 200


RouteWork = Callable[[dict[str, Any], Delivery], Awaitable[Answer]]
"""A route's use: the request body (`{}` for a GET) and the delivery in, the answer out."""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings.log_level, settings.log_json)
    gateway = Gateway(settings)
    app = FastAPIOffline(
        title="Orders service HTTP API",
        version="0.1.0",
        description=openapi.DESCRIPTION,
        lifespan=gateway.lifespan,
        static_url=DOCS_ASSETS,
        # No "valid" badge: Swagger UI would send the document to an online validator.
        swagger_ui_parameters={"validatorUrl": None},
    )
    app.include_router(gateway.health.router())
    app.include_router(gateway.router())
    app.add_exception_handler(RequestValidationError, _refused_parameters)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)
    if settings.api_cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.api_cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=[
                "Authorization",
                API_KEY_HEADER,
                "Content-Type",
                "Idempotency-Key",
                CORRELATION_HEADER,
            ],
            expose_headers=[CORRELATION_HEADER, "Retry-After", "WWW-Authenticate"],
            max_age=600,
        )
    app.add_middleware(RequestMetrics, registry=gateway.health.registry)  # outermost
    app.openapi = lambda: openapi.document(app)  # type: ignore[method-assign]
    return app


def _body_size(request: Request, limit: int) -> int:
    """What a body will take: its declared length, else (chunked) as much as allowed."""
    declared = request.headers.get("content-length", "")
    return min(int(declared), limit) if declared.isdigit() else limit


class Gateway:
    """The routes' one dependency: settings, the handlers and, once started, the core."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.names = topology(settings)
        self.keys = ApiKeys(settings.api_key_hashes)
        self.health = GatewayHealth(CollectorRegistry())
        # The worker's metrics: events published (FastStream's middleware) and the backlog.
        self.metrics = ServiceMetrics(self.health.registry)
        self.broker = rabbit_broker(
            settings.amqp_url.get_secret_value(),
            log_level=logging.DEBUG,
            fail_fast=False,
            middlewares=[self.metrics.middleware],
        )
        self.handlers = OrderHandlers()
        self.core: Core | None = None
        self.budget = ByteBudget(settings.max_in_flight_bytes)
        """Bodies read and worked on at once, as the worker's (service/budget.py)."""

    @contextlib.asynccontextmanager
    async def lifespan(self, _: FastAPI) -> AsyncIterator[None]:
        if not self.keys:
            log.warning(
                "no API key configured (ORDERS_API_KEY_HASHES): every /api/orders request "
                "is answered 401; `make api-key` makes a key and prints its setting"
            )
        async with open_core(
            self.settings,
            self.names,
            self,
            report_backlog=self.metrics.backlog,
            on_connect=self._connected,
            on_broker=self.broker.start,
            # One attempt must fit in the retry budget, so a 503 comes when it says.
            mongo_timeout_ms=min(5000, int(self.settings.api_retry_seconds * 1000)),
        ) as core:
            self.core = core
            self.handlers.service = core.orders
            self.health.phase = Phase.RUNNING
            log.info("HTTP gateway on http://%s:%d", self.settings.api_host, self.settings.api_port)
            try:
                yield
            finally:
                self.health.phase = Phase.STOPPING
                with contextlib.suppress(Exception, TimeoutError):  # bounded, like the worker's
                    await asyncio.wait_for(core.drain(), 5.0)
                await self.broker.stop()

    def _connected(self, client: AsyncMongoClient[Document]) -> None:
        self.health.client = client

    async def publish_event(self, event: PendingEvent) -> None:
        """Publish with a bound (the events feed tries the batch again: its events wait in
        their orders meanwhile)."""
        await asyncio.wait_for(
            publish_event(self.broker, self.names, event), PUBLISH_TIMEOUT_SECONDS
        )

    async def answer(
        self, request: Request, work: RouteWork, *, with_body: bool = False
    ) -> Response:
        """Read the body (`with_body`) once, run `work` on it (waiting out a short MongoDB
        outage) and write its envelope; every error becomes the contract's error envelope
        with its HTTP status."""
        correlation_id = _correlation_id(request)
        limit = self.settings.max_message_bytes
        # A key per request: a retry after a lost connection cannot apply it twice.
        delivery = Delivery(f"http:{uuid.uuid4()}", correlation_id)
        headers = {CORRELATION_HEADER: correlation_id}
        with log_context(correlation_id=correlation_id):
            try:
                async with self.budget.hold(_body_size(request, limit) if with_body else 0):
                    body = await read_object(request, limit=limit) if with_body else {}
                    answer = await with_retries(
                        lambda: work(body, delivery), self.settings.api_retry_seconds
                    )
            except OrderError as exc:
                log.info("refused %s: %s %s", request.url.path, exc.code, exc.message)
                status = exc.status if isinstance(exc, RefusedBody) else STATUS_OF_CODE[exc.code]
                answer = Answer(error_reply(exc), status)
            except TransientExhausted:
                log.warning("refused %s: MongoDB unavailable", request.url.path)
                answer = Answer(error_reply(OrderError(UNAVAILABLE)), 503)
                headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
            except Exception:
                log.exception("request failed: %s %s", request.method, request.url.path)
                answer = Answer(error_reply(OrderError("Internal error")), 500)
        return _json(answer, headers)

    def router(self) -> APIRouter:
        router = APIRouter(prefix="/api/orders", dependencies=[Depends(authenticate(self.keys))])
        handlers = self.handlers

        @router.post("/place", **openapi.PLACE)
        async def place_order(request: Request, key: IdempotencyKey = None) -> Response:
            async def work(body: dict[str, Any], delivery: Delivery) -> Answer:
                body = with_header(body, "idempotency_key", key)
                placed = await self._orders().place(parse(PlaceOrder, body), delivery)
                return Answer(placed_reply(placed, with_data=True), 200 if placed.replayed else 201)

            return await self.answer(request, work, with_body=True)

        queries = (
            ("/list", handlers.list, ListOrders, openapi.LIST),
            ("/stats", handlers.stats, OrderStatsQuery, openapi.STATS),
            ("/stats/overview", handlers.stats, OrderStatsQuery, openapi.STATS_OVERVIEW),
            ("/meta/statuses", handlers.statuses, ListStatuses, openapi.STATUSES),
            ("/statuses/available", handlers.statuses, ListStatuses, openapi.STATUSES_AVAILABLE),
        )
        for path, handler, model, spec in queries:
            router.add_api_route(path, self._query(handler, model), methods=["GET"], **spec)

        @router.get("/{id:order}", **openapi.GET)
        async def get_order(request: Request, id: OrderId) -> Response:
            async def work(_: dict[str, Any], delivery: Delivery) -> Answer:
                if request.query_params:
                    raise _unknown_parameters(request)
                return Answer(await handlers.get({"id": id}, delivery))

            return await self.answer(request, work)

        @router.post("/{id:order}/action", **openapi.ACTION)
        async def act_on_order(
            request: Request, id: OrderId, key: IdempotencyKey = None
        ) -> Response:
            async def work(body: dict[str, Any], delivery: Delivery) -> Answer:
                body = with_header(body, "request_id", key)
                for field in ("id", "order_id"):
                    if field in body:
                        raise ValidationFailed(
                            [{"loc": [field], "msg": "the path names the order"}],
                            f"Invalid {field}: the path names the order",
                        )
                return Answer(await handlers.act(body | {"id": id}, delivery))

            return await self.answer(request, work, with_body=True)

        return router

    def _orders(self) -> OrderService:
        if self.core is None:  # pragma: no cover - the lifespan sets it before serving
            raise RuntimeError("the gateway is not started")
        return self.core.orders

    def _query(
        self,
        handler: Callable[[dict[str, Any], Delivery], Awaitable[dict[str, Any]]],
        model: type[ListOrders] | type[OrderStatsQuery] | type[ListStatuses],
    ) -> Callable[[Request], Awaitable[Response]]:
        """A GET route whose query string is the body of `handler`'s query `model`."""

        async def endpoint(request: Request) -> Response:
            async def work(_: dict[str, Any], delivery: Delivery) -> Answer:
                return Answer(await handler(query_object(model, request.query_params), delivery))

            return await self.answer(request, work)

        return endpoint


def _correlation_id(request: Request) -> str:
    """The caller's `X-Correlation-ID` when it is 1 to 200 visible ASCII characters (it
    becomes the events' AMQP correlation id), else a new one; the reply says which."""
    given = request.headers.get(CORRELATION_HEADER, "")
    return given if _CORRELATION_ID.fullmatch(given) else str(uuid.uuid4())


_CORRELATION_ID = re.compile(r"[\x21-\x7e]{1,200}")


class UnknownPath(OrderError):
    code = "not_found"


def _unknown_parameters(request: Request) -> ValidationFailed:
    names = list(dict.fromkeys(request.query_params.keys()))
    return ValidationFailed(
        [{"loc": [name], "msg": "Extra inputs are not permitted"} for name in names],
        f"Invalid query parameter {names[0]}: not permitted",
    )


def _json(answer: Answer, headers: dict[str, str] | None = None) -> Response:
    return Response(
        encode(answer.reply),
        status_code=answer.status,
        media_type="application/json",
        headers=headers,
    )


async def _refused_parameters(request: Request, exc: Exception) -> Response:
    """A path or header FastAPI refused: the contract's validation_error, not FastAPI's."""
    assert isinstance(exc, RequestValidationError)
    details = [{"loc": list(error["loc"]), "msg": error["msg"]} for error in exc.errors()]
    where = ".".join(str(part) for part in details[0]["loc"])
    error = ValidationFailed(details, f"Invalid {where}: {details[0]['msg']}")
    return _json(Answer(error_reply(error), 422), {CORRELATION_HEADER: _correlation_id(request)})


async def _internal_error(request: Request, exc: Exception) -> Response:
    """Anything raised outside a route's own handling: the envelope, nothing internal shown
    (the traceback goes to the log)."""
    return _json(
        Answer(error_reply(OrderError("Internal error")), 500),
        {CORRELATION_HEADER: _correlation_id(request)},
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and methods: the same envelope."""
    assert isinstance(exc, HTTPException)
    error = UnknownPath(str(exc.detail)) if exc.status_code == 404 else BadRequest(str(exc.detail))
    headers = dict(exc.headers or {}) | {CORRELATION_HEADER: _correlation_id(request)}
    return _json(Answer(error_reply(error), exc.status_code), headers)
