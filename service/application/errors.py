"""The error envelope: the one shape in which a refusal or failure is answered."""

from __future__ import annotations

from typing import Any

from service.domain.errors import OrderError


def error_reply(error: OrderError) -> dict[str, Any]:
    return {
        "success": False,
        "message": error.message,
        "error": {"code": error.code, "details": error.details},
    }
