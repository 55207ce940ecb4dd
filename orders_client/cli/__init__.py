"""`orders`: the command line of the orders service, on top of `OrdersClient`.

Every command reads `ORDERS_AMQP_URL`, has `--help` with an example, and on an error
prints one line to stderr and exits non-zero (1; 2 for a usage error).

This module makes the app of the command groups (`orders`, `stats`, `watch`, `history`,
`importing`, `dead_letters`: a module each), with the global options of `session`; `options`,
`render`, `replay` and `errors` are what the groups share.
"""

from __future__ import annotations

import logging
import sys

import typer
from pydantic import ValidationError as PydanticValidationError

from orders_client.cli import dead_letters, history, importing, orders, session, stats, watch
from orders_client.cli.errors import CliError, error_line, one_line, validation_summary
from orders_client.cli.render import err
from orders_client.errors import OrdersError

__all__ = ["app", "main"]

app = typer.Typer(
    name="orders",
    help="Place, act on, query and watch orders of the orders service over RabbitMQ.",
    epilog="Example: ORDERS_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/ orders list "
    "--status pending",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.callback()(session.options)
# Added without a name, a group's commands are the app's own; `--help` lists them in this order.
for group in (orders, stats, watch, history, importing):
    app.add_typer(group.commands)
app.add_typer(dead_letters.commands, name="dead-letters")


def main() -> None:
    """The `orders` console script."""
    # The AMQP libraries log connection failures themselves; the one error line says it.
    for name in ("aio_pika", "aiormq"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        app()
    except OrdersError as exc:
        message = error_line(exc)
    except PydanticValidationError as exc:
        message = validation_summary(exc)
    except CliError as exc:
        message = str(exc)
    except Exception as exc:
        message = f"unexpected {type(exc).__name__}: {exc}"
    else:
        return
    err.print(f"error: {one_line(message)}", markup=False, highlight=False, soft_wrap=True)
    sys.exit(1)
