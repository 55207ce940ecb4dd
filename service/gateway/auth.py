"""Who may call the order routes: the holders of an API key whose SHA-256 digest is in
`ORDERS_API_KEY_HASHES`.

A key is sent as `Authorization: Bearer <key>` or as `X-API-Key: <key>`. The gateway keeps
only the digests, so its settings, environment and logs never hold a usable key; the digest
of the key presented is compared with every stored digest in constant time. With no digest
configured every order route is refused: the gateway never opens up by default.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable, Iterable
from typing import Annotated

from fastapi import Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException

API_KEY_HEADER = "X-API-Key"
REALM = "orders"
KEY_BYTES = 32
"""Of randomness in a key `new_key` makes (43 URL-safe characters)."""

bearer_token = HTTPBearer(
    scheme_name="BearerToken",
    description="`Authorization: Bearer <API key>`.",
    auto_error=False,
)
api_key_header = APIKeyHeader(
    name=API_KEY_HEADER,
    scheme_name="ApiKey",
    description=f"`{API_KEY_HEADER}: <API key>` (the same keys as the bearer token).",
    auto_error=False,
)


def key_digest(key: str) -> str:
    """What `ORDERS_API_KEY_HASHES` holds for `key`: the SHA-256 hex digest of its UTF-8
    bytes (the same as `printf %s "$KEY" | sha256sum`)."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return secrets.token_urlsafe(KEY_BYTES)


class ApiKeys:
    """The accepted keys, as digests."""

    def __init__(self, digests: Iterable[str]) -> None:
        self._digests = tuple(sorted(digest.encode() for digest in digests))

    def __bool__(self) -> bool:
        return bool(self._digests)

    def accept(self, key: str) -> bool:
        """Whether `key` is one of them; every stored digest is compared, in constant time."""
        presented = key_digest(key).encode()
        accepted = False
        for digest in self._digests:
            accepted |= hmac.compare_digest(presented, digest)
        return accepted


def authenticate(keys: ApiKeys) -> Callable[..., Awaitable[None]]:
    """The dependency of every order route: a 401 unless one key presented is accepted.
    Declared with FastAPI's security classes, so the OpenAPI document lists both schemes."""

    async def authenticated(
        bearer: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_token)],
        api_key: Annotated[str | None, Security(api_key_header)],
    ) -> None:
        presented = [key for key in (bearer and bearer.credentials, api_key) if key]
        if not presented:
            raise Unauthorized(
                f"Missing API key: send Authorization: Bearer <key> or {API_KEY_HEADER}: <key>"
            )
        if not any(keys.accept(key) for key in presented):
            raise Unauthorized("Invalid API key", invalid=True)

    return authenticated


class Unauthorized(HTTPException):
    """401 with the challenge RFC 6750 describes; the app's handler writes the envelope."""

    def __init__(self, message: str, *, invalid: bool = False) -> None:
        challenge = f'Bearer realm="{REALM}"' + (', error="invalid_token"' if invalid else "")
        super().__init__(401, message, headers={"WWW-Authenticate": challenge})
