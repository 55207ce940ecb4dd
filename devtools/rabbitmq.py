"""Local RabbitMQ helpers: start the broker if it is down, manage throwaway vhosts.

CLI::

    python -m devtools.rabbitmq ensure
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5672
DEFAULT_USER = "guest"
_NO_SUCH_VHOST = "does not exist"
_NO_SUCH_USER = "does not exist"


class RabbitMQError(RuntimeError):
    """RabbitMQ is not reachable and could not be started, or rabbitmqctl failed."""


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def ensure_running(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, timeout: float = 60) -> None:
    """Make sure RabbitMQ accepts connections, starting ``rabbitmq-server -detached`` if needed."""
    if port_open(host, port):
        return
    if shutil.which("rabbitmq-server") is None:
        raise RabbitMQError(
            f"nothing listens on {host}:{port} and rabbitmq-server is not on PATH; "
            "start RabbitMQ (or set ORDERS_AMQP_URL to a running broker)"
        )
    subprocess.run(["rabbitmq-server", "-detached"], check=True, stdin=subprocess.DEVNULL)
    _wait_for_port(host, port, timeout)
    if shutil.which("rabbitmqctl") is not None:
        _rabbitmqctl("-t", str(int(timeout)), "await_startup", timeout=timeout + 10)


def _wait_for_port(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not port_open(host, port):
        if time.monotonic() > deadline:
            raise RabbitMQError(f"RabbitMQ did not listen on {host}:{port} within {timeout:.0f}s")
        time.sleep(0.5)


def _rabbitmqctl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    if shutil.which("rabbitmqctl") is None:
        raise RabbitMQError("rabbitmqctl is not on PATH")
    result = subprocess.run(
        ["rabbitmqctl", "-q", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        raise RabbitMQError(
            f"rabbitmqctl {' '.join(args)} failed ({result.returncode}): "
            f"{(result.stderr or result.stdout).strip()}"
        )
    return result


def create_vhost(name: str) -> None:
    """Create vhost ``name`` (idempotent) and give ``guest`` full permissions on it."""
    _rabbitmqctl("add_vhost", name)
    _rabbitmqctl("set_permissions", "-p", name, DEFAULT_USER, ".*", ".*", ".*")


def delete_vhost(name: str) -> None:
    """Delete vhost ``name`` and everything in it; a missing vhost is not an error."""
    try:
        _rabbitmqctl("delete_vhost", name)
    except RabbitMQError as exc:
        if _NO_SUCH_VHOST not in str(exc):
            raise


@contextlib.contextmanager
def scratch_vhost(prefix: str) -> Iterator[str]:
    """The AMQP URL of a fresh vhost `<prefix>-<hex>` on the local RabbitMQ (started if
    down), deleted on exit."""
    ensure_running()
    vhost = f"{prefix}-{uuid.uuid4().hex[:8]}"
    create_vhost(vhost)
    try:
        yield f"amqp://guest:guest@{DEFAULT_HOST}:{DEFAULT_PORT}/{quote(vhost, safe='')}"
    finally:
        delete_vhost(vhost)


def import_definitions(path: Path) -> None:
    """Import a definitions file (users, vhosts, permissions, topology) into the node.

    rabbitmqctl may run as the ``rabbitmq`` user (the packaged wrapper switches to it when
    called by root), so it reads a world-readable temporary copy, deleted afterwards.
    Users listed with an empty ``password_hash`` cannot log in until `change_password`.
    """
    with tempfile.TemporaryDirectory(prefix="rabbitmq-definitions-") as directory:
        readable = Path(directory) / "definitions.json"
        shutil.copyfile(path, readable)
        Path(directory).chmod(0o755)
        readable.chmod(0o644)
        _rabbitmqctl("import_definitions", str(readable))


def change_password(user: str, password: str) -> None:
    """Set ``user``'s password."""
    _rabbitmqctl("change_password", user, password)


def delete_user(name: str) -> None:
    """Delete user ``name``; a missing user is not an error."""
    try:
        _rabbitmqctl("delete_user", name)
    except RabbitMQError as exc:
        if _NO_SUCH_USER not in str(exc):
            raise


def list_permissions(vhost: str) -> list[dict[str, str]]:
    """``[{"user", "configure", "write", "read"}, ...]`` of ``vhost``."""
    return _listing("list_permissions", "-p", vhost)


def list_topic_permissions(vhost: str) -> list[dict[str, str]]:
    """``[{"user", "exchange", "write", "read"}, ...]`` of ``vhost``."""
    return _listing("list_topic_permissions", "-p", vhost)


def list_bindings(vhost: str) -> list[dict[str, str]]:
    """``[{"source_name", "destination_name", "routing_key", ...}, ...]`` of ``vhost``."""
    return _listing("list_bindings", "-p", vhost)


def _listing(*args: str) -> list[dict[str, str]]:
    output = _rabbitmqctl(*args, "--formatter", "json").stdout.strip()
    rows: list[dict[str, str]] = json.loads(output) if output else []
    return rows


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(prog="python -m devtools.rabbitmq")
    parser.add_argument("command", choices=["ensure"])
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args(argv)
    try:
        ensure_running(args.host, args.port, args.timeout)
    except (RabbitMQError, subprocess.SubprocessError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"RabbitMQ is up on {args.host}:{args.port}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
