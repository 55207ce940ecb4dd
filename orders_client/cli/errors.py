"""The errors of the command line, and each as the one line it prints."""

from __future__ import annotations

import json
import re

from pydantic import ValidationError as PydanticValidationError

from orders_client.errors import OrdersError


class CliError(Exception):
    """A usage problem found by a command itself (bad file, bad option combination)."""


def validation_summary(exc: PydanticValidationError) -> str:
    problems = [
        f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}"
        for error in exc.errors()
    ]
    return "invalid: " + "; ".join(problems)


def error_line(exc: OrdersError) -> str:
    text = str(exc)
    if isinstance(exc.details, list):
        problems = [
            f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg')}"
            for d in exc.details
            if isinstance(d, dict)
        ]
        if problems:
            text += " (" + "; ".join(problems) + ")"
    elif isinstance(exc.details, dict) and exc.details:
        text += " " + json.dumps(exc.details, default=str)
    return text


_CREDENTIALS = re.compile(r"(\w+://[^:/@\s]*):[^@\s]*@")


def one_line(text: str) -> str:
    """One line, with any `scheme://user:password@` shown as `scheme://user:***@`."""
    return _CREDENTIALS.sub(r"\1:***@", " ".join(text.split()))
