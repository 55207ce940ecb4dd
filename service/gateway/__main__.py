"""`python -m service.gateway`: serve the HTTP gateway with uvicorn on ORDERS_API_HOST and
ORDERS_API_PORT. Ctrl-C or SIGTERM finish the requests in flight and publish what is pending."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

import aio_pika
import uvicorn

from service.bootstrap import StaleQueues, check_queues
from service.config import Settings
from service.gateway.app import create_app
from service.topology import topology

EXIT_STALE_QUEUES = 78
"""As the worker's: queues from an older version are in the way (EX_CONFIG)."""


def refuse_stale_queues(settings: Settings) -> None:
    """Stop with one error line naming the queues an older version declared, before uvicorn
    starts (an error in the app's lifespan would end in a traceback). A RabbitMQ that is
    not up yet is waited for by the lifespan."""
    try:
        asyncio.run(check_queues(settings.amqp_url.get_secret_value(), topology(settings)))
    except StaleQueues as exc:
        logging.getLogger("service").error("%s", exc)  # noqa: TRY400 - no traceback
        sys.exit(EXIT_STALE_QUEUES)
    except (aio_pika.exceptions.AMQPError, OSError):
        pass


def main() -> None:
    # uvicorn shuts down gracefully on SIGTERM and then raises the signal again: ending on
    # this handler makes a graceful stop exit 0, as the worker does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    settings = Settings()
    app = create_app(settings)
    refuse_stale_queues(settings)
    uvicorn.run(
        app,
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,  # the service's own logging (create_app configures it)
        access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_seconds),
    )


if __name__ == "__main__":
    main()
