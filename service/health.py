"""Liveness, readiness and the Prometheus text over HTTP, for operators and orchestrators.

A small aiohttp server runs inside the worker's lifespan, beside FastStream's own runner, so
`faststream run --factory service.app:create_app` keeps handling signals and graceful
shutdown exactly as before (docs/operations.md, "Health and metrics", says why not uvicorn).

    GET /health/live   200 while the process's event loop answers
    GET /health/ready  200 when every queue's consumer is attached and MongoDB answers a
                       ping in time; 503 otherwise, the JSON body saying which check failed
    GET /metrics       the registry in Prometheus text format
"""

from __future__ import annotations

import asyncio
import enum
import logging
from typing import Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from service.store.client import Document

log = logging.getLogger(__name__)

MONGO_PING_TIMEOUT = 2.0
"""Seconds MongoDB has to answer the readiness ping."""

OK = "ok"


class Phase(enum.StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"


class Consumers(Protocol):
    async def missing(self) -> list[str]:
        """Queue names whose consumer is not attached right now."""


class Readiness:
    """Whether this worker should be sent work: running, consuming every queue, MongoDB up.

    `missing()` is the same check the consumer watchdog makes, so a consumer lost after a
    reconnect makes the worker not ready until the watchdog has attached it again."""

    def __init__(self, consumers: Consumers) -> None:
        self._consumers = consumers
        self.phase = Phase.STARTING
        self.client: AsyncMongoClient[Document] | None = None

    async def checks(self) -> dict[str, str]:
        """Each check's outcome: `ok`, or what is wrong."""
        consumers, mongo = await asyncio.gather(self._consumers_check(), self._mongo_check())
        return {
            "worker": OK if self.phase is Phase.RUNNING else str(self.phase),
            "consumers": consumers,
            "mongo": mongo,
        }

    async def _consumers_check(self) -> str:
        missing = await self._consumers.missing()
        return f"not consuming {', '.join(sorted(missing))}" if missing else OK

    async def _mongo_check(self) -> str:
        return await mongo_check(self.client)


async def mongo_check(client: AsyncMongoClient[Document] | None) -> str:
    """`ok` when MongoDB answers a ping within MONGO_PING_TIMEOUT, else what went wrong
    (the worker's readiness and the HTTP gateway's)."""
    if client is None:
        return "not connected yet"
    try:
        await asyncio.wait_for(client.admin.command("ping"), MONGO_PING_TIMEOUT)
    except TimeoutError:
        return f"no answer to a ping within {MONGO_PING_TIMEOUT:g}s"
    except PyMongoError as exc:
        return f"ping failed: {type(exc).__name__}"
    return OK


class HealthServer:
    """The HTTP endpoints, on `host:port`; started first and stopped last by the lifespan."""

    def __init__(
        self, readiness: Readiness, registry: CollectorRegistry, *, host: str, port: int
    ) -> None:
        self._readiness = readiness
        self._registry = registry
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Bind (an `OSError` if the port is taken: the worker does not start) and serve."""
        app = web.Application()
        app.router.add_get("/health/live", self._live)
        app.router.add_get("/health/ready", self._ready)
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, self._host, self._port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        log.info("health and metrics on http://%s:%d", self._host, self._port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @staticmethod
    async def _live(_: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def _ready(self, _: web.Request) -> web.Response:
        checks = await self._readiness.checks()
        ready = all(outcome == OK for outcome in checks.values())
        return web.json_response(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status=200 if ready else 503,
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        """The text format Prometheus asks for in `Accept` (0.0.4 text when it says none)."""
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encode(self._registry), headers={"Content-Type": content_type})
