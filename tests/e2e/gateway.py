"""Start, probe and stop the HTTP gateway the way ``make http`` does: a plain subprocess.

``python -m service.gateway`` in this venv, its settings from ``ORDERS_*`` variables only,
with an API key of its own (the setting holds its SHA-256 digest, as ``make api-key`` prints
it). Like ``worker.py``, nothing here imports the service.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from devtools.embedded_mongo import free_port

from .worker import LOG_TAIL_LINES, REPO_ROOT, log_tail

READY_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
READY_PATH = "/health/ready"
POLL_SECONDS = 0.1


@dataclass(frozen=True)
class Gateway:
    process: subprocess.Popen[bytes]
    log_path: Path
    database: str
    port: int
    """Of the API on 127.0.0.1."""
    api_key: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def auth(self) -> dict[str, str]:
        """The headers that authenticate a request."""
        return {"Authorization": f"Bearer {self.api_key}"}

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return log_tail(self.log_path, lines)


def start_gateway(
    amqp_url: str,
    mongo_url: str,
    database: str,
    log_path: Path,
    extra_env: Mapping[str, str] | None = None,
) -> Gateway:
    """``python -m service.gateway`` from the repo root on a free port, accepting a new API
    key (``extra_env`` may set ``ORDERS_API_KEY_HASHES`` otherwise); the worker's health port
    is 0 (the gateway serves its own health endpoints on its API port)."""
    api_key = secrets.token_urlsafe(32)
    digest = hashlib.sha256(api_key.encode()).hexdigest()
    env = {
        **os.environ,
        "ORDERS_AMQP_URL": amqp_url,
        "ORDERS_MONGO_URL": mongo_url,
        "ORDERS_MONGO_DATABASE": database,
        "ORDERS_LOG_LEVEL": "INFO",
        "ORDERS_API_HOST": "127.0.0.1",
        "ORDERS_API_PORT": str(free_port()),
        "ORDERS_HTTP_PORT": "0",
        "ORDERS_API_KEY_HASHES": json.dumps([digest]),
        **(extra_env or {}),
    }
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "service.gateway"],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return Gateway(process, log_path, database, int(env["ORDERS_API_PORT"]), api_key)


def wait_until_serving(gateway: Gateway, timeout: float = READY_TIMEOUT) -> None:
    """Serving = ``GET /health/ready`` answers 200. Uvicorn listens only once the lifespan
    (MongoDB, indexes, the broker topology) is done, so until then the connection is
    refused."""
    deadline = time.monotonic() + timeout
    last = "no attempt made"
    with httpx.Client(base_url=gateway.url, timeout=2.0) as http:
        while time.monotonic() < deadline:
            if gateway.process.poll() is not None:
                pytest.fail(
                    f"gateway exited with code {gateway.process.returncode} before it served; "
                    f"log tail:\n{gateway.log_tail()}"
                )
            try:
                response = http.get(READY_PATH)
            except httpx.TransportError as exc:
                last = repr(exc)
            else:
                if response.status_code == 200:
                    return
                last = f"{response.status_code} {response.text[:200]}"
            time.sleep(POLL_SECONDS)  # nothing to wait on: the port is not open yet
    pytest.fail(f"gateway not serving within {timeout}s ({last}); log tail:\n{gateway.log_tail()}")


def stop_gateway(gateway: Gateway, timeout: float = STOP_TIMEOUT) -> int | None:
    """SIGTERM; the exit code, or None when it had to be killed after `timeout` seconds."""
    process = gateway.process
    if process.poll() is not None:
        return process.returncode
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)
        return None
