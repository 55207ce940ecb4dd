"""Write the docker-compose stack's `.env` from `.env.example`, every empty value a random
secret (URL-safe: the passwords go into AMQP and MongoDB URLs).

    python -m devtools.compose_env [--example .env.example] [--target .env]

An existing target is left alone (exit code 1): rotating a password also needs the broker's
and the database's users changed, which this does not do.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENT = re.compile(r"^(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")
SECRET_BYTES = 24


def filled(example: str) -> str:
    """`example` with every `NAME=` (empty value) given a random secret."""
    lines = []
    for line in example.splitlines():
        match = ASSIGNMENT.match(line)
        empty = match is not None and not match["value"]
        lines.append(f"{line}{secrets.token_urlsafe(SECRET_BYTES)}" if empty else line)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write .env with random secrets.")
    parser.add_argument("--example", type=Path, default=ROOT / ".env.example")
    parser.add_argument("--target", type=Path, default=ROOT / ".env")
    args = parser.parse_args(argv)
    if args.target.exists():
        print(f"{args.target} exists; left as it is", file=sys.stderr)
        return 1
    descriptor = os.open(args.target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        out.write(filled(args.example.read_text(encoding="utf-8")))
    print(f"wrote {args.target} (mode 600, git-ignored)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
