"""Render definitions.json with password hashes from the environment, for loading at boot.

    python render_definitions.py SOURCE TARGET [--owner UID:GID]

The committed definitions carry no password (`"password_hash": ""`). This writes a copy in
which each user `orders-<role>` has the hash of `RABBITMQ_<ROLE>_PASSWORD` (e.g.
`RABBITMQ_WORKER_PASSWORD` for `orders-worker`), and adds the administrator
`RABBITMQ_ADMIN_USER` (default `orders-admin`, tag `administrator`, every permission on
vhost `/`) with `RABBITMQ_ADMIN_PASSWORD`: with definitions loaded at boot RabbitMQ creates
no default user, so the management UI needs one. A missing or empty password stops it with
exit code 2 and nothing written. The target is written with mode 0600 (owned by `--owner`
when given, e.g. the RabbitMQ image's `999:999`).

Standard library only: docker-compose.yml runs it once before RabbitMQ starts.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

HASHING = "rabbit_password_hashing_sha256"
ADMIN_USER = "RABBITMQ_ADMIN_USER"
ADMIN_PASSWORD = "RABBITMQ_ADMIN_PASSWORD"  # noqa: S105 - the variable's name
DEFAULT_ADMIN = "orders-admin"


class MissingPassword(Exception):
    pass


def password_hash(password: str, salt: bytes | None = None) -> str:
    """RabbitMQ's `rabbit_password_hashing_sha256`: base64(salt + sha256(salt + password)),
    with a 4-byte salt."""
    salt = secrets.token_bytes(4) if salt is None else salt
    digest = hashlib.sha256(salt + password.encode()).digest()
    return base64.b64encode(salt + digest).decode()


def password_variable(user: str) -> str:
    """`orders-worker` -> `RABBITMQ_WORKER_PASSWORD`."""
    role = re.sub(r"^orders-", "", user)
    return f"RABBITMQ_{re.sub(r'[^A-Za-z0-9]', '_', role).upper()}_PASSWORD"


def _password(env: Mapping[str, str], name: str) -> str:
    password = env.get(name, "")
    if not password:
        raise MissingPassword(f"{name} is not set (see .env.example)")
    return password


def render(definitions: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """`definitions` with every user's password hash, plus the administrator."""
    rendered: dict[str, Any] = json.loads(json.dumps(definitions))
    for user in rendered["users"]:
        user["password_hash"] = password_hash(_password(env, password_variable(user["name"])))
        user["hashing_algorithm"] = HASHING
    admin = env.get(ADMIN_USER) or DEFAULT_ADMIN
    if admin in {user["name"] for user in rendered["users"]}:
        raise MissingPassword(f"{ADMIN_USER} names a service user: {admin}")
    rendered["users"].append(
        {
            "name": admin,
            "password_hash": password_hash(_password(env, ADMIN_PASSWORD)),
            "hashing_algorithm": HASHING,
            "tags": ["administrator"],
            "limits": {},
        }
    )
    for vhost in rendered["vhosts"]:
        rendered["permissions"].append(
            {
                "user": admin,
                "vhost": vhost["name"],
                "configure": ".*",
                "write": ".*",
                "read": ".*",
            }
        )
    return rendered


def write(target: Path, rendered: Mapping[str, Any], owner: tuple[int, int] | None) -> None:
    """Write atomically, readable by its owner only."""
    partial = target.with_name(f".{target.name}.partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        json.dump(rendered, out, indent=2)
    os.chmod(partial, 0o600)
    if owner is not None:
        os.chown(partial, *owner)
    os.replace(partial, target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    parser.add_argument("--owner", help="UID:GID of the written file")
    args = parser.parse_args(argv)
    owner = tuple(int(part) for part in args.owner.split(":")) if args.owner else None
    definitions = json.loads(args.source.read_text(encoding="utf-8"))
    try:
        rendered = render(definitions, os.environ)
    except MissingPassword as exc:
        sys.stderr.write(f"render_definitions: {exc}\n")
        return 2
    write(args.target, rendered, (owner[0], owner[1]) if owner else None)
    users = ", ".join(user["name"] for user in rendered["users"])
    sys.stdout.write(f"render_definitions: wrote {args.target} (users: {users})\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
