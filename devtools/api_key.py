"""API keys for the HTTP gateway (`make api-key`).

CLI::

    python -m devtools.api_key           # a new key, and the setting that accepts it
    python -m devtools.api_key KEY ...   # the setting that accepts these keys

The key goes to the client; the gateway keeps only its SHA-256 digest
(`ORDERS_API_KEY_HASHES`), so the printed `export` line holds nothing usable as a key.
"""

from __future__ import annotations

import argparse
import json
import shlex

from service.gateway.auth import key_digest, new_key


def setting(keys: list[str]) -> str:
    """The shell line that makes the gateway accept `keys`."""
    digests = json.dumps([key_digest(key) for key in keys])
    return f"export ORDERS_API_KEY_HASHES={shlex.quote(digests)}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("keys", nargs="*", help="existing keys (default: make a new one)")
    args = parser.parse_args(argv)
    keys: list[str] = args.keys or [new_key()]
    if not args.keys:
        print(f"# A new API key; send it as Authorization: Bearer {keys[0]}")
        print(f"export ORDERS_API_KEY={shlex.quote(keys[0])}")
    print("# The gateway's setting (digests only), before `make http`:")
    print(setting(keys))


if __name__ == "__main__":
    main()
