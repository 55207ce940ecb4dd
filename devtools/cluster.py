"""A local cluster beside the system broker: 3 RabbitMQ nodes and a 3-member MongoDB replica set.

RabbitMQ: the installed RabbitMQ's own scripts run three nodes, ``c1@localhost`` to
``c3@localhost``, on 127.0.0.1:5682-5684 (distribution ports 25682-25684), joined into one
cluster. Each node has its own data, logs, configuration file and environment file, so
nothing of the system broker (its node name, port, configuration, cookie) applies. The nodes
run as the user who starts them, with an Erlang cookie of their own under ``.data/cluster``.

MongoDB: the embedded mongod (the ``embedded-mongo`` group, as devtools/embedded_mongo.py)
runs three members of replica set ``rs-cluster`` on 127.0.0.1:27031-27033.

Everything lives under ``.data/cluster/`` (git-ignored) and survives ``stop``: ``start``
reuses what runs and starts what does not; ``reset`` stops and deletes it all. CLI::

    python -m devtools.cluster start        # prints `export ORDERS_AMQP_URL=...` lines
    python -m devtools.cluster stop | status | reset | urls
    python -m devtools.cluster node-stop N | node-start N | node-kill N     # RabbitMQ cN
    python -m devtools.cluster leader QUEUE [--vhost V]                      # cN holding it
    python -m devtools.cluster member-kill N | member-start N | primary      # MongoDB mN

The functions below are what tests and harnesses call: `start`, `stop`, `stop_node`,
`start_node`, `kill_node`, `queue_leader`, `queue_nodes`, `leading_node`, `create_vhost`,
`amqp_url`, `primary`, `kill_member`, `start_member`, `wait_for_primary`.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from pymongo import MongoClient
from pymongo.errors import OperationFailure, PyMongoError

from devtools.embedded_mongo import mongod_binary

ROOT = Path(__file__).resolve().parents[1] / ".data" / "cluster"
HOST = "127.0.0.1"
SIZE = 3
USER = "guest"
PASSWORD = "guest"  # noqa: S105 - RabbitMQ's default account, reachable from loopback only
RABBIT_PORT_BASE = 5681  # c1 on 5682
DIST_PORT_BASE = 25681  # c1 on 25682
MONGO_PORT_BASE = 27030  # m1 on 27031
REPLICA_SET = "rs-cluster"
ELECTION_TIMEOUT_MS = 5000
"""How long secondaries wait for a silent primary before electing another (default 10 s)."""
STARTUP_TIMEOUT = 120.0
STOP_TIMEOUT = 60.0

_NOT_YET_INITIALIZED = 94
_ALREADY_INITIALIZED = 23
T = TypeVar("T")


class ClusterError(RuntimeError):
    """A node or member could not be started, joined, stopped or queried."""


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _parallel(function: Callable[[T], object], items: Iterable[T]) -> None:
    """`function` on every item at once; the first error is raised once all have finished."""
    items = list(items)
    if not items:
        return
    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        for future in [pool.submit(function, item) for item in items]:
            future.result()


def _wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out after {timeout:.0f}s {what}")
        time.sleep(0.2)


def _process_alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, killed but not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def _environ_of(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (entry.split(b"=", 1) for entry in raw.split(b"\0") if b"=" in entry)
    return {key.decode(errors="replace"): value.decode(errors="replace") for key, value in pairs}


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _refuse_foreign(taken: Iterable[str]) -> None:
    """Stop when a port of ours answers without our process behind it: the ports and node
    names are fixed, so another checkout's cluster (or anything else) holds them."""
    names = list(taken)
    if names:
        raise ClusterError(
            f"the ports of {', '.join(names)} are in use, not by this checkout's cluster "
            f"({ROOT}); stop whatever holds them (another checkout: its make cluster-stop)"
        )


def _detach(args: list[str], env: dict[str, str], console: Path) -> None:
    """Start `args` in a session of its own, reparented away from this process (no zombie
    left here when it is killed), its output appended to `console`."""
    with console.open("ab") as out:
        subprocess.run(
            ["setsid", "-f", *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            check=True,
            cwd=console.parent,
        )


# -- RabbitMQ --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RabbitNode:
    """Node ``c<index>@localhost`` of the local cluster (index from 1)."""

    index: int

    @property
    def name(self) -> str:
        return f"c{self.index}@localhost"

    @property
    def port(self) -> int:
        return RABBIT_PORT_BASE + self.index

    @property
    def dist_port(self) -> int:
        return DIST_PORT_BASE + self.index

    @property
    def base(self) -> Path:
        return ROOT / "rabbitmq" / f"c{self.index}"

    @property
    def pidfile(self) -> Path:
        return self.base / "mnesia" / f"{self.name}.pid"

    def env(self) -> dict[str, str]:
        """The environment of this node's scripts (rabbitmq-server and rabbitmqctl)."""
        return {
            **os.environ,
            # The cookie: $HOME/.erlang.cookie, shared by the three nodes and their CLI.
            "HOME": str(_rabbit_home()),
            "RABBITMQ_CONF_ENV_FILE": str(self.base / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.base / "advanced.config"),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": HOST,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_PID_FILE": str(self.pidfile),
            "ERL_EPMD_ADDRESS": HOST,
            "ERL_CRASH_DUMP": str(self.base / "erl_crash.dump"),
        }

    def pid(self) -> int | None:
        """The OS pid of this node's Erlang VM, checked against its environment."""
        pid = _read_pid(self.pidfile)
        if pid is None or not _process_alive(pid):
            return None
        if _environ_of(pid).get("RABBITMQ_NODENAME") != self.name:
            return None  # a stale pid file, the pid now someone else's
        return pid

    def listening(self) -> bool:
        return _port_open(self.port)


NODES = tuple(RabbitNode(index) for index in range(1, SIZE + 1))


def node(index: int) -> RabbitNode:
    """Node ``c<index>`` (1-based)."""
    if not 1 <= index <= SIZE:
        raise ClusterError(f"there is no node {index}: nodes are 1 to {SIZE}")
    return NODES[index - 1]


def _rabbit_bin() -> Path:
    """The directory of the real rabbitmq-server and rabbitmqctl scripts: Debian's
    /usr/sbin wrappers switch to the `rabbitmq` user and its cookie, which we do not want."""
    found = shutil.which("rabbitmq-server") or (
        "/usr/lib/rabbitmq/bin/rabbitmq-server"
        if Path("/usr/lib/rabbitmq/bin/rabbitmq-server").is_file()
        else None
    )
    if found is None:
        raise ClusterError("rabbitmq-server is not installed (not on PATH)")
    return Path(found).resolve().parent


def _rabbit_home() -> Path:
    return ROOT / "rabbitmq"


def _prepare_rabbit_files() -> None:
    home = _rabbit_home()
    home.mkdir(parents=True, exist_ok=True)
    cookie = home / ".erlang.cookie"
    if not cookie.exists():
        cookie.write_text(secrets.token_hex(20).upper())
        cookie.chmod(0o400)
    for each in NODES:
        (each.base / "log").mkdir(parents=True, exist_ok=True)
        (each.base / "mnesia").mkdir(parents=True, exist_ok=True)
        # An environment file of its own: the system's (NODENAME, ...) must not apply.
        (each.base / "rabbitmq-env.conf").write_text(
            "# the local cluster's node: everything is set in the environment\n"
        )
        (each.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = {HOST}:{each.port}\n"
            "loopback_users.guest = true\n"
            "log.console = false\n"
            "log.file.level = info\n"
        )
        (each.base / "enabled_plugins").write_text("[].\n")


def rabbitmqctl(index: int, *args: str, timeout: float = 60) -> str:
    """`rabbitmqctl -n c<index>@localhost ARGS`; its standard output."""
    target = node(index)
    result = subprocess.run(
        [str(_rabbit_bin() / "rabbitmqctl"), "-q", "-n", target.name, *args],
        env=target.env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        raise ClusterError(
            f"rabbitmqctl -n {target.name} {shlex.join(args)} failed ({result.returncode}): "
            f"{(result.stderr or result.stdout).strip()}"
        )
    return result.stdout


def _launch_node(target: RabbitNode) -> None:
    _log(f"starting RabbitMQ node {target.name} on {HOST}:{target.port}")
    _detach(
        [str(_rabbit_bin() / "rabbitmq-server")], target.env(), target.base / "log" / "console.log"
    )


def _await_node(target: RabbitNode, timeout: float = STARTUP_TIMEOUT) -> None:
    """Wait until the node has booted; `await_startup` needs it registered with epmd first."""
    deadline = time.monotonic() + timeout
    while True:
        left = max(int(deadline - time.monotonic()), 1)
        try:
            rabbitmqctl(target.index, "--timeout", str(left), "await_startup", timeout=left + 15)
        except ClusterError as exc:
            if time.monotonic() > deadline:
                log = target.base / "log" / f"{target.name}.log"
                raise ClusterError(f"{target.name} did not start: see {log}\n{exc}") from exc
            time.sleep(0.5)
        else:
            return


def _cluster_status(via: RabbitNode) -> tuple[list[str], list[str]]:
    """`(members, running members)` as node `via` sees them."""
    status = json.loads(rabbitmqctl(via.index, "cluster_status", "--formatter", "json"))
    members = list(status.get("disk_nodes", [])) + list(status.get("ram_nodes", []))
    return members, list(status.get("running_nodes", []))


def _join(target: RabbitNode, seed: RabbitNode) -> None:
    _log(f"joining {target.name} to {seed.name}")
    rabbitmqctl(target.index, "stop_app")
    try:
        rabbitmqctl(target.index, "join_cluster", seed.name)
    finally:
        rabbitmqctl(target.index, "start_app")


def start_rabbitmq() -> None:
    """Start (or reuse) the three nodes and join c2 and c3 to c1."""
    _prepare_rabbit_files()
    down = [each for each in NODES if each.pid() is None]
    _refuse_foreign(f"RabbitMQ node {each.name}" for each in down if each.listening())
    for each in down:
        _launch_node(each)
    # A clustered node that restarts waits for its peers: all of them boot at once.
    _parallel(_await_node, [each for each in NODES if each in down or not each.listening()])
    seed = NODES[0]
    members, running = _cluster_status(seed)
    joining = [each for each in NODES[1:] if each.name not in members]
    for each in joining:
        _join(each, seed)
    if joining:
        _, running = _cluster_status(seed)
    if sorted(running) != sorted(each.name for each in NODES):
        raise ClusterError(
            f"the RabbitMQ cluster runs {running}; `python -m devtools.cluster reset` starts over"
        )


def stop_node(index: int, timeout: float = STOP_TIMEOUT) -> None:
    """Stop node `index` cleanly (`rabbitmqctl stop`) and wait until its VM has exited."""
    target = node(index)
    pid = target.pid()
    if pid is None:
        return
    _log(f"stopping RabbitMQ node {target.name}")
    with contextlib.suppress(ClusterError):
        rabbitmqctl(index, "stop", timeout=timeout)
    _wait_until(lambda: not _process_alive(pid), timeout, f"for {target.name} to exit")


def start_node(index: int, timeout: float = STARTUP_TIMEOUT) -> None:
    """Start node `index` again (it rejoins the cluster it belongs to)."""
    target = node(index)
    if target.pid() is None:
        _launch_node(target)
    _await_node(target, timeout)


def kill_node(index: int) -> int:
    """SIGKILL the Erlang VM of node `index` (its pid file's pid, checked to be that node's);
    returns the pid killed."""
    target = node(index)
    pid = target.pid()
    if pid is None:
        raise ClusterError(f"{target.name} is not running")
    _log(f"kill -9 {pid} ({target.name})")
    os.kill(pid, signal.SIGKILL)
    _wait_until(lambda: not _process_alive(pid), 30, f"for {target.name} ({pid}) to die")
    return pid


def stop_rabbitmq() -> None:
    _parallel(lambda each: stop_node(each.index), NODES)


def running_node_indexes() -> list[int]:
    return [each.index for each in NODES if each.pid() is not None and each.listening()]


def _any_running() -> int:
    running = running_node_indexes()
    if not running:
        raise ClusterError("no node of the RabbitMQ cluster is running")
    return running[0]


def queue_leader(queue: str, vhost: str = "/") -> int | None:
    """The index of the node that holds the leader of quorum queue `queue` (None: no leader,
    or no such queue). Asked of any running node."""
    output = rabbitmqctl(
        _any_running(), "list_queues", "-p", vhost, "name", "leader", "--formatter", "json"
    )
    for row in json.loads(output or "[]"):
        if row.get("name") == queue:
            leader = str(row.get("leader", ""))
            for each in NODES:
                if leader == each.name:
                    return each.index
    return None


def queue_leaders(vhost: str = "/") -> dict[str, int]:
    """`{queue: node index}` of every quorum queue of `vhost` that has a leader."""
    output = rabbitmqctl(
        _any_running(), "list_queues", "-p", vhost, "name", "leader", "--formatter", "json"
    )
    by_name = {each.name: each.index for each in NODES}
    return {
        str(row["name"]): by_name[str(row.get("leader"))]
        for row in json.loads(output or "[]")
        if str(row.get("leader")) in by_name
    }


def queue_nodes(vhost: str = "/") -> dict[str, int]:
    """`{queue: node index}` of every queue of `vhost` on a running node: a quorum queue's
    leader, or the node a classic queue lives on (it has no leader; asked of each node with
    `--local`)."""
    found: dict[str, int] = {}
    for index in running_node_indexes():
        output = rabbitmqctl(
            index, "list_queues", "-p", vhost, "--local", "name", "type", "--formatter", "json"
        )
        for row in json.loads(output or "[]"):
            if str(row.get("type")) == "classic":
                found[str(row["name"])] = index
    return {**found, **queue_leaders(vhost)}


def leading_node(vhost: str = "/") -> int | None:
    """The node that holds the most queue leaders (or classic queues) of `vhost`."""
    counts = Counter(queue_nodes(vhost).values())
    return counts.most_common(1)[0][0] if counts else None


def create_vhost(name: str) -> None:
    """Create vhost `name` on the cluster (idempotent), `guest` with full permissions."""
    via = _any_running()
    rabbitmqctl(via, "add_vhost", name)
    rabbitmqctl(via, "set_permissions", "-p", name, USER, ".*", ".*", ".*")


def delete_vhost(name: str) -> None:
    """Delete vhost `name` from the cluster; a missing vhost is not an error."""
    try:
        rabbitmqctl(_any_running(), "delete_vhost", name)
    except ClusterError as exc:
        if "does not exist" not in str(exc):
            raise


def amqp_url(vhost: str = "/", nodes: Iterable[int] = (1, 2, 3)) -> str:
    """The service's URL for the cluster: every node's address, one vhost."""
    hosts = ",".join(f"{HOST}:{node(index).port}" for index in nodes)
    path = "" if vhost == "/" else quote(vhost, safe="")
    return f"amqp://{USER}:{PASSWORD}@{hosts}/{path}"


# -- MongoDB ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MongoMember:
    """Member ``m<index>`` of replica set ``rs-cluster`` (index from 1)."""

    index: int

    @property
    def port(self) -> int:
        return MONGO_PORT_BASE + self.index

    @property
    def dbpath(self) -> Path:
        return ROOT / "mongo" / f"m{self.index}"

    @property
    def pidfile(self) -> Path:
        return self.dbpath / "mongod.pid"

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def pid(self) -> int | None:
        pid = _read_pid(self.pidfile)
        if pid is None or not _process_alive(pid):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        if not cmdline[0].endswith(b"mongod") or str(self.port).encode() not in cmdline:
            return None
        return pid


MEMBERS = tuple(MongoMember(index) for index in range(1, SIZE + 1))


def member(index: int) -> MongoMember:
    """Member ``m<index>`` (1-based)."""
    if not 1 <= index <= SIZE:
        raise ClusterError(f"there is no member {index}: members are 1 to {SIZE}")
    return MEMBERS[index - 1]


def mongo_url() -> str:
    """The service's URL for the replica set: every member, the set's name."""
    hosts = ",".join(each.address for each in MEMBERS)
    return f"mongodb://{hosts}/?replicaSet={REPLICA_SET}"


@contextlib.contextmanager
def _direct(target: MongoMember, timeout: float = 2.0) -> Iterator[MongoClient[dict[str, Any]]]:
    ms = int(timeout * 1000)
    client: MongoClient[dict[str, Any]] = MongoClient(
        f"mongodb://{target.address}/?directConnection=true",
        serverSelectionTimeoutMS=ms,
        connectTimeoutMS=ms,
        socketTimeoutMS=max(ms, 10_000),
    )
    try:
        yield client
    finally:
        client.close()


def _hello(target: MongoMember) -> dict[str, Any] | None:
    try:
        with _direct(target, timeout=1.0) as client:
            hello: dict[str, Any] = client.admin.command("hello")
    except PyMongoError:
        return None
    return hello


def _launch_member(target: MongoMember) -> None:
    target.dbpath.mkdir(parents=True, exist_ok=True)
    _log(f"starting mongod m{target.index} on {target.address}")
    result = subprocess.run(
        [
            str(mongod_binary()),
            "--bind_ip",
            HOST,
            "--port",
            str(target.port),
            "--replSet",
            REPLICA_SET,
            "--dbpath",
            str(target.dbpath),
            "--logpath",
            str(target.dbpath / "mongod.log"),
            "--logappend",
            "--nounixsocket",
            "--wiredTigerCacheSizeGB",
            "0.25",
            "--setParameter",
            "diagnosticDataCollectionEnabled=false",
            # SIGTERM on a primary waits this long for a secondary to catch up (default 15 s,
            # spent in full when all three stop at once).
            "--setParameter",
            "shutdownTimeoutMillisForSignaledShutdown=1000",
            "--fork",
            "--pidfilepath",
            str(target.pidfile),
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=STARTUP_TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr).decode(errors="replace").strip()
        raise ClusterError(f"mongod m{target.index} did not start ({result.returncode}): {output}")


def _initiate() -> None:
    config = {
        "_id": REPLICA_SET,
        "members": [{"_id": each.index, "host": each.address} for each in MEMBERS],
        "settings": {"electionTimeoutMillis": ELECTION_TIMEOUT_MS},
    }
    with _direct(MEMBERS[0], timeout=5.0) as client:
        try:
            client.admin.command("replSetGetStatus")
        except OperationFailure as exc:
            if exc.code != _NOT_YET_INITIALIZED:
                raise
            _log(f"initiating replica set {REPLICA_SET}")
            try:
                client.admin.command("replSetInitiate", config)
            except OperationFailure as again:
                if again.code != _ALREADY_INITIALIZED:
                    raise


def primary() -> int | None:
    """The index of the member that is the writable primary now (None: there is none)."""
    for each in MEMBERS:
        hello = _hello(each)
        if hello and hello.get("isWritablePrimary") and hello.get("setName") == REPLICA_SET:
            return each.index
    return None


def wait_for_primary(timeout: float = STARTUP_TIMEOUT) -> int:
    """Wait until a member is the writable primary; its index."""
    found: list[int] = []

    def elected() -> bool:
        index = primary()
        if index is not None:
            found.append(index)
        return index is not None

    _wait_until(elected, timeout, f"for a primary of {REPLICA_SET}")
    return found[-1]


def start_mongo() -> None:
    """Start (or reuse) the three members, initiate the set once, wait for a primary."""
    down = [each for each in MEMBERS if each.pid() is None]
    _refuse_foreign(f"mongod m{each.index}" for each in down if _port_open(each.port))
    _parallel(_launch_member, down)
    _initiate()
    wait_for_primary()


def kill_member(index: int) -> int:
    """SIGKILL mongod `index` (its pid file's pid, checked to be that member's); the pid."""
    target = member(index)
    pid = target.pid()
    if pid is None:
        raise ClusterError(f"mongod m{index} is not running")
    _log(f"kill -9 {pid} (mongod m{index})")
    os.kill(pid, signal.SIGKILL)
    _wait_until(lambda: not _process_alive(pid), 30, f"for mongod m{index} ({pid}) to die")
    return pid


def start_member(index: int) -> None:
    """Start mongod `index` again; it rejoins the set (as a secondary, or wins an election)."""
    target = member(index)
    if target.pid() is None:
        _launch_member(target)


def stop_member(index: int, timeout: float = STOP_TIMEOUT) -> None:
    """Stop mongod `index` cleanly (SIGTERM) and wait until it has exited."""
    target = member(index)
    pid = target.pid()
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    _wait_until(lambda: not _process_alive(pid), timeout, f"for mongod m{index} to exit")


def stop_mongo() -> None:
    _parallel(lambda each: stop_member(each.index), MEMBERS)


# -- both ------------------------------------------------------------------------------------


@contextlib.contextmanager
def _exclusive() -> Iterator[None]:
    """One `start` at a time (a harness and a test session may both want the cluster)."""
    ROOT.mkdir(parents=True, exist_ok=True)
    with (ROOT / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def start() -> tuple[str, str]:
    """Start (or reuse) the RabbitMQ cluster and the replica set; `(amqp_url, mongo_url)`."""
    with _exclusive():
        _parallel(lambda start_one: start_one(), [start_rabbitmq, start_mongo])
    return amqp_url(), mongo_url()


def stop() -> None:
    """Stop every node and member; their data stays for the next `start`."""
    _parallel(lambda stop_one: stop_one(), [stop_rabbitmq, stop_mongo])


def reset() -> None:
    """Stop everything and delete `.data/cluster`."""
    stop()
    shutil.rmtree(ROOT, ignore_errors=True)


def status() -> list[str]:
    """One line per node and member."""
    lines = []
    for each in NODES:
        pid = each.pid()
        state = f"running (pid {pid})" if pid and each.listening() else "stopped"
        lines.append(f"rabbitmq {each.name} {HOST}:{each.port} {state}")
    for one in MEMBERS:
        hello = _hello(one) if one.pid() else None
        if hello is None:
            state = "stopped"
        elif hello.get("isWritablePrimary"):
            state = "PRIMARY"
        elif hello.get("secondary"):
            state = "SECONDARY"
        else:
            state = "running"
        lines.append(f"mongod m{one.index} {one.address} {state}")
    return lines


def exports(amqp: str, mongo: str) -> str:
    return (
        f"export ORDERS_AMQP_URL={shlex.quote(amqp)}\nexport ORDERS_MONGO_URL={shlex.quote(mongo)}"
    )


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m devtools.cluster")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("start", "stop", "status", "reset", "urls", "primary"):
        commands.add_parser(name)
    for name in ("node-stop", "node-start", "node-kill", "member-kill", "member-start"):
        commands.add_parser(name).add_argument("index", type=int)
    leader = commands.add_parser("leader")
    leader.add_argument("queue")
    leader.add_argument("--vhost", default="/")
    return parser.parse_args(argv)


def _run(args: argparse.Namespace) -> None:
    command: str = args.command
    if command == "start":
        began = time.monotonic()
        amqp, mongo = start()
        _log(f"cluster ready in {time.monotonic() - began:.1f}s (make cluster-stop stops it)")
        print(exports(amqp, mongo))
    elif command == "urls":
        print(exports(amqp_url(), mongo_url()))
    elif command == "stop":
        stop()
    elif command == "reset":
        reset()
    elif command == "status":
        print("\n".join(status()))
    elif command == "node-stop":
        stop_node(args.index)
    elif command == "node-start":
        start_node(args.index)
    elif command == "node-kill":
        kill_node(args.index)
    elif command == "leader":
        index = queue_leader(args.queue, args.vhost)
        print(node(index).name if index else "none")
    elif command == "primary":
        found = primary()
        print(f"m{found} {member(found).address}" if found else "none")
    elif command == "member-kill":
        kill_member(args.index)
    elif command == "member-start":
        start_member(args.index)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    try:
        _run(_parse_args(argv))
    except (ClusterError, PyMongoError, OSError, subprocess.SubprocessError) as exc:
        _log(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
