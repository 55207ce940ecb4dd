"""`python -m service.gateway`: serve the HTTP gateway with uvicorn on ORDERS_API_HOST and
ORDERS_API_PORT. Ctrl-C or SIGTERM finish the requests in flight and publish what is pending."""

from __future__ import annotations

import signal
import sys

import uvicorn

from service.config import Settings
from service.gateway.app import create_app


def main() -> None:
    # uvicorn shuts down gracefully on SIGTERM and then raises the signal again: ending on
    # this handler makes a graceful stop exit 0, as the worker does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    settings = Settings()
    uvicorn.run(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,  # the service's own logging (create_app configures it)
        access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_seconds),
    )


if __name__ == "__main__":
    main()
