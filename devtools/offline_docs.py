"""Check that the HTTP gateway's /docs renders with no network: headless Chromium, every host
but 127.0.0.1 unreachable, must show every operation of the OpenAPI document.

CLI::

    python -m devtools.offline_docs                 # serve the app here (no MongoDB needed)
    python -m devtools.offline_docs --url http://127.0.0.1:8080   # a running gateway
    python -m devtools.offline_docs --screenshot docs.png

Needs Chromium (Debian: `apt-get install chromium`). Without `--url` the gateway's app is
served by uvicorn with its lifespan off: /docs, its assets and /openapi.json need neither
MongoDB nor RabbitMQ. Exit code 0 when every operation is on the rendered page, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import uvicorn

from devtools.embedded_mongo import free_port
from service.config import Settings
from service.gateway.app import create_app

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
RENDER_BUDGET_MS = 15_000
OFFLINE_FLAGS = (
    # Everything but loopback goes to a proxy that is not there, and no name resolves.
    "--proxy-server=http://127.0.0.1:9",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
)


def chromium() -> str:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    sys.exit("Chromium not found: apt-get install chromium")


@contextlib.contextmanager
def served_here() -> Iterator[str]:
    """The gateway's app on a free loopback port, lifespan off, in a thread."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(Settings()),
            host="127.0.0.1",
            port=port,
            lifespan="off",
            log_config=None,
            access_log=False,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                sys.exit("the app did not start serving")
            time.sleep(0.05)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def render(url: str, screenshot: Path | None) -> str:
    """The DOM Chromium built from `url` offline (and a screenshot, if asked)."""
    with tempfile.TemporaryDirectory(prefix="offline-docs-") as profile:
        command = [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={profile}",
            *OFFLINE_FLAGS,
            f"--virtual-time-budget={RENDER_BUDGET_MS}",
        ]
        if screenshot is not None:
            subprocess.run(
                [*command, f"--screenshot={screenshot}", "--window-size=1200,1800", url],
                check=True,
                capture_output=True,
                timeout=120,
            )
        done = subprocess.run(
            [*command, "--dump-dom", url],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
    return done.stdout


def operations(base_url: str) -> set[tuple[str, str]]:
    document = httpx.get(f"{base_url}/openapi.json", timeout=10).json()
    paths: dict[str, dict[str, object]] = document["paths"]
    return {(method.upper(), path) for path, methods in paths.items() for method in methods}


def rendered(dom: str) -> set[tuple[str, str]]:
    """(method, path) of each operation Swagger UI drew: its method badge, then its path."""
    found = re.findall(
        r'opblock-summary-method">([A-Z]+)<.*?data-path="([^"]+)"', dom, flags=re.DOTALL
    )
    return {(method, path) for method, path in found}


def check(base_url: str, screenshot: Path | None) -> bool:
    expected = operations(base_url)
    dom = render(f"{base_url}/docs", screenshot)
    drawn = rendered(dom)
    print(f"{base_url}/docs rendered offline: {len(dom):,} characters of DOM")
    for method, path in sorted(expected, key=lambda op: (op[1], op[0])):
        print(f"  {'ok     ' if (method, path) in drawn else 'MISSING'} {method} {path}")
    if "Authorize" in dom:
        print("  ok      the Authorize button (API key, bearer token)")
    return bool(expected) and expected <= drawn


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running gateway (default: serve the app here)")
    parser.add_argument("--screenshot", type=Path, help="also write a PNG of the page")
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        url = args.url.rstrip("/") if args.url else stack.enter_context(served_here())
        ok = check(url, args.screenshot)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
