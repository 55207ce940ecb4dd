"""docker-compose.yml against the settings class: no Docker engine needed to catch a typo."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from service.config import Settings

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"
WORKERS = ("worker-1", "worker-2")
GATEWAY = "http"
PREFIX = str(Settings.model_config.get("env_prefix", ""))
SETTING_NAMES = {f"{PREFIX}{name}".upper() for name in Settings.model_fields}
# The defaults point at 127.0.0.1, which inside a container is the container itself.
SHARED_REQUIRED = {"ORDERS_AMQP_URL", "ORDERS_MONGO_URL"}
REQUIRED = {
    **dict.fromkeys(WORKERS, SHARED_REQUIRED | {"ORDERS_HTTP_HOST", "ORDERS_HTTP_PORT"}),
    GATEWAY: SHARED_REQUIRED | {"ORDERS_API_HOST", "ORDERS_API_PORT"},
}


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    compose = yaml.safe_load(COMPOSE.read_text())
    services: dict[str, Any] = compose["services"]
    return services


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "write the environment as a mapping"
    return {str(name): str(value) for name, value in env.items()}


def settings_of(service: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings the service's process would build from its environment alone."""
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    for name, value in environment(service).items():
        monkeypatch.setenv(name, value)
    return Settings()


def test_the_stack_is_rabbitmq_mongo_two_workers_and_the_gateway_of_one_image(
    services: dict[str, Any],
) -> None:
    assert {"rabbitmq", "mongo", *WORKERS, GATEWAY} <= services.keys()
    images = {(services[s].get("build"), services[s].get("image")) for s in (*WORKERS, GATEWAY)}
    assert len(images) == 1


@pytest.mark.parametrize("name", [*WORKERS, GATEWAY])
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
        port = environment(service)["ORDERS_HTTP_PORT"]
        published = [str(mapping).rsplit(":", 1) for mapping in service["ports"]]
        assert [container for _, container in published] == [port]
        host_ports += [host for host, _ in published]
        probe = " ".join(service["healthcheck"]["test"])
        assert re.search(rf"127\.0\.0\.1:{port}/health/ready\b", probe), probe
    assert len(set(host_ports)) == len(WORKERS), "two workers on one host port"


def test_the_gateway_shares_the_workers_settings_and_dependencies(
    services: dict[str, Any],
) -> None:
    gateway, worker = services[GATEWAY], services[WORKERS[0]]
    own = {"ORDERS_HTTP_HOST", "ORDERS_HTTP_PORT", "ORDERS_API_HOST", "ORDERS_API_PORT"}

    def shared(service: dict[str, Any]) -> dict[str, str]:
        return {k: v for k, v in environment(service).items() if k not in own}

    assert shared(gateway) == shared(worker)
    assert gateway["depends_on"] == worker["depends_on"]


def test_the_gateway_runs_the_gateway_module_and_publishes_its_port(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = services[GATEWAY]
    command = gateway["command"]
    command = command.split() if isinstance(command, str) else command
    assert command[-2:] == ["-m", "service.gateway"]

    port = str(settings_of(gateway, monkeypatch).api_port)
    published = [str(mapping).rsplit(":", 1) for mapping in gateway["ports"]]
    assert [container for _, container in published] == [port]
    worker_ports = {
        str(mapping).rsplit(":", 1)[0] for w in WORKERS for mapping in services[w]["ports"]
    }
    assert {host for host, _ in published}.isdisjoint(worker_ports), "a host port taken twice"
    probe = " ".join(gateway["healthcheck"]["test"])
    assert re.search(rf"127\.0\.0\.1:{port}/health/ready\b", probe), probe
