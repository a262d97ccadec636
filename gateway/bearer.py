"""API clients: ``Authorization: Bearer <Cognito access token>`` instead of a browser session (RFC 6750).

Accepted only when GATEWAY_API_CLIENT_IDS lists the token's ``client_id``. The token must be a Cognito access
token (``token_use=access``) signed by the pool's keys, with the right ``iss``, not expired: ``oidc.verify``
checks all of it. An ID token, a refresh token, another client's or pool's token, or a malformed or repeated
``Authorization`` header is an ``InvalidBearer`` (401 ``invalid_token``): never a redirect, never a pass, and never
a fallback to the session cookie sent alongside. Other schemes (``Basic …``) are not this gateway's credentials.
"""

from __future__ import annotations

import logging
import re

from aiohttp import web

from .errors import InvalidBearer, InvalidToken
from .identity import Identity
from .oidc import OidcClient

log = logging.getLogger("gateway.bearer")

_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")  # RFC 6750 2.1
MAX_TOKEN_LENGTH = 16 * 1024


class BearerTokens:
    def __init__(self, oidc: OidcClient, client_ids: frozenset[str]) -> None:
        self._oidc = oidc
        self._client_ids = client_ids

    @staticmethod
    def presented(request: web.Request) -> str | None:
        """The request's Bearer token; None when it sends none; InvalidBearer when the header is malformed."""
        values = request.headers.getall("Authorization", [])
        if not values:
            return None
        # SECURITY: two Authorization headers are ambiguous: which one would the upstream believe?
        if len(values) > 1:
            raise InvalidBearer("The request has more than one Authorization header.")
        scheme, _, token = values[0].strip().partition(" ")
        if scheme.lower() != "bearer":
            return None
        token = token.strip()
        if not token or len(token) > MAX_TOKEN_LENGTH or not _B64TOKEN.fullmatch(token):
            raise InvalidBearer("The Authorization header is not a well-formed Bearer token.")
        return token

    async def identity(self, token: str) -> Identity:
        try:
            return await self._oidc.verify_bearer(token, self._client_ids)
        except InvalidToken as exc:
            log.info("refused a bearer token: %s", exc)
            raise InvalidBearer() from None
