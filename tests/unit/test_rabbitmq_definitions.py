"""deploy/rabbitmq/render_definitions.py and devtools/compose_env.py: the compose stack's
secrets, from the env file into RabbitMQ's definitions. The hashes are also tried against the
real broker in tests/integration/test_rabbitmq_permissions.py."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from deploy.rabbitmq.render_definitions import (
    HASHING,
    MissingPassword,
    main,
    password_hash,
    password_variable,
    render,
)
from devtools import compose_env
from service.config import Settings
from service.topology import topology

ROOT = Path(__file__).resolve().parents[2]
DEFINITIONS = ROOT / "deploy" / "rabbitmq" / "definitions.json"
ENV = {
    "RABBITMQ_ADMIN_PASSWORD": "admin-secret",
    "RABBITMQ_WORKER_PASSWORD": "worker-secret",
    "RABBITMQ_PRODUCER_PASSWORD": "producer-secret",
    "RABBITMQ_CONSUMER_PASSWORD": "consumer-secret",
}


def definitions() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DEFINITIONS.read_text(encoding="utf-8"))
    return loaded


def verifies(hashed: str, password: str) -> bool:
    raw = base64.b64decode(hashed)
    salt, digest = raw[:4], raw[4:]
    return digest == hashlib.sha256(salt + password.encode()).digest()


def test_the_hash_is_rabbitmqs_salted_sha256() -> None:
    # The worked example of RabbitMQ's documentation ("Computing Password Hash"):
    # salt 908D C60A, password test12.
    assert password_hash("test12", bytes.fromhex("908DC60A")) == (
        "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR"
    )
    first, second = password_hash("same"), password_hash("same")
    assert first != second  # a new salt each time
    assert verifies(first, "same")
    assert verifies(second, "same")
    assert not verifies(first, "other")


def test_each_user_gets_the_hash_of_its_own_variable() -> None:
    rendered = render(definitions(), ENV)
    users = {user["name"]: user for user in rendered["users"]}
    for name in ("orders-worker", "orders-producer", "orders-consumer"):
        variable = password_variable(name)
        assert verifies(users[name]["password_hash"], ENV[variable]), name
        assert users[name]["hashing_algorithm"] == HASHING
        assert users[name]["tags"] == []
    assert password_variable("orders-worker") == "RABBITMQ_WORKER_PASSWORD"


def test_the_administrator_is_added_with_every_permission_and_nothing_else_changes() -> None:
    source = definitions()
    rendered = render(source, ENV | {"RABBITMQ_ADMIN_USER": "ops"})
    admin = rendered["users"][-1]
    assert (admin["name"], admin["tags"]) == ("ops", ["administrator"])
    assert verifies(admin["password_hash"], "admin-secret")
    assert rendered["permissions"][-1] == {
        "user": "ops",
        "vhost": "/",
        "configure": ".*",
        "write": ".*",
        "read": ".*",
    }
    assert rendered["permissions"][:-1] == source["permissions"]
    for section in ("topic_permissions", "exchanges", "queues", "bindings", "vhosts"):
        assert rendered[section] == source[section], section
    assert render(source, ENV)["users"][-1]["name"] == "orders-admin"
    assert {user["password_hash"] for user in source["users"]} == {""}, "source changed"


@pytest.mark.parametrize("missing", sorted(ENV))
def test_a_missing_or_empty_password_writes_nothing(
    missing: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(MissingPassword, match=missing):
        render(definitions(), {k: v for k, v in ENV.items() if k != missing})
    for name, value in (ENV | {missing: ""}).items():
        monkeypatch.setenv(name, value)
    target = tmp_path / "definitions.json"
    assert main([str(DEFINITIONS), str(target)]) == 2
    assert not target.exists()


def test_the_admin_cannot_take_a_service_users_name() -> None:
    with pytest.raises(MissingPassword, match="orders-worker"):
        render(definitions(), ENV | {"RABBITMQ_ADMIN_USER": "orders-worker"})


def test_the_written_file_is_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    target = tmp_path / "definitions.json"
    assert main([str(DEFINITIONS), str(target)]) == 0
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    written = json.loads(target.read_text(encoding="utf-8"))
    assert len(written["users"]) == 4
    assert list(tmp_path.iterdir()) == [target]


def test_compose_env_fills_only_the_empty_values(tmp_path: Path) -> None:
    example = tmp_path / "example"
    example.write_text("# a comment=\nA_PASSWORD=\nKEEP=127.0.0.1\nB_PASSWORD=\n", "utf-8")
    target = tmp_path / ".env"
    assert compose_env.main(["--example", str(example), "--target", str(target)]) == 0
    lines = target.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "# a comment="
    assert lines[2] == "KEEP=127.0.0.1"
    first, second = lines[1].split("=", 1)[1], lines[3].split("=", 1)[1]
    assert len(first) >= 32
    assert first != second
    assert all(c.isalnum() or c in "-_" for c in first + second)  # URL-safe
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    # An existing .env is never overwritten.
    assert compose_env.main(["--example", str(example), "--target", str(target)]) == 1
    assert target.read_text(encoding="utf-8").splitlines() == lines


def test_the_event_history_is_declared_as_the_worker_declares_it() -> None:
    """RabbitMQ refuses to declare an existing stream with other arguments: the file's must be
    the worker's, with the default settings."""
    history = topology(Settings()).history
    (stream,) = [queue for queue in definitions()["queues"] if queue["name"] == history.name]
    assert stream["arguments"] == history.arguments
    assert stream["durable"] is True
    bindings = [b for b in definitions()["bindings"] if b["destination"] == history.name]
    assert [(b["source"], b["routing_key"]) for b in bindings] == [("orders.events", "#")]
