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
PREFIX = str(Settings.model_config.get("env_prefix", ""))
SETTING_NAMES = {f"{PREFIX}{name}".upper() for name in Settings.model_fields}
REQUIRED = {
    # the defaults point at 127.0.0.1, which inside a container is the container itself
    "ORDERS_AMQP_URL",
    "ORDERS_MONGO_URL",
    "ORDERS_HTTP_HOST",
    "ORDERS_HTTP_PORT",
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


def test_the_stack_is_rabbitmq_mongo_and_two_workers_of_one_image(
    services: dict[str, Any],
) -> None:
    assert {"rabbitmq", "mongo", *WORKERS} <= services.keys()
    images = {(services[w].get("build"), services[w].get("image")) for w in WORKERS}
    assert len(images) == 1


@pytest.mark.parametrize("worker", WORKERS)
def test_worker_environment_names_are_settings_and_the_required_are_set(
    services: dict[str, Any], worker: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = environment(services[worker])
    ours = {name for name in env if name.startswith(PREFIX)}
    assert ours - SETTING_NAMES == set(), "not a field of Settings"
    assert ours >= REQUIRED

    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()  # the values are valid too

    assert urlsplit(settings.amqp_url.get_secret_value()).hostname == "rabbitmq"
    assert urlsplit(settings.mongo_url.get_secret_value()).hostname == "mongo"
    assert settings.http_host == "0.0.0.0"  # reachable from outside the container


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
