"""Strict verification of Cognito's ID and access tokens with PyJWT.

Inputs to a verification come from configuration and discovery, never from the token: the algorithms are
GATEWAY_TOKEN_ALGORITHMS, the issuer is the configured one, the key is looked up by ``kid`` in the IdP's JWKS. Every
time claim is required and typed. ``token_use`` keeps an ID token from being replayed as an access token and back;
access tokens have no ``aud``, so their ``client_id`` is checked instead.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from typing import Any

import jwt

from .config import CognitoSettings
from .errors import InvalidToken
from .jwks import JwksCache

_HASHES = {"256": hashlib.sha256, "384": hashlib.sha384, "512": hashlib.sha512}


class TokenVerifier:
    def __init__(self, settings: CognitoSettings, clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._clock = clock

    async def verify_id_token(
        self, jwks: JwksCache, token: str, *, nonce: str | None, access_token: str, sub: str | None = None
    ) -> dict[str, Any]:
        """Verify an ID token from a sign-in (``nonce`` given) or from a refresh (``sub`` of the session given)."""
        claims, algorithm = await self._decode(
            jwks, token, audience=self._settings.client_id, required=["exp", "iat", "iss", "aud", "sub", "token_use"]
        )
        if claims.get("token_use") != "id":
            raise InvalidToken("token_use is not id")
        if nonce is not None:
            presented = claims.get("nonce")
            # SECURITY: the nonce binds the ID token to this browser's sign-in; without it a token from another
            # sign-in (an attacker's, or an old one) would be accepted.
            if not isinstance(presented, str) or not hmac.compare_digest(presented.encode(), nonce.encode()):
                raise InvalidToken("nonce does not match this sign-in")
        elif sub is None or claims.get("sub") != sub:
            # SECURITY: a refreshed ID token carries no nonce; it must at least be about the session's user.
            raise InvalidToken("refreshed ID token is for another subject")
        expected_at_hash = claims.get("at_hash")
        if expected_at_hash is not None and not hmac.compare_digest(
            str(expected_at_hash).encode(), _at_hash(access_token, algorithm).encode()
        ):
            raise InvalidToken("at_hash does not match the access token")
        return claims

    async def verify_access_token(self, jwks: JwksCache, token: str) -> dict[str, Any]:
        claims, _ = await self._decode(
            jwks, token, audience=None, required=["exp", "iat", "iss", "token_use", "client_id"]
        )
        # SECURITY: Cognito access tokens have no aud; client_id and token_use stand in for it.
        if claims.get("token_use") != "access":
            raise InvalidToken("token_use is not access")
        if claims.get("client_id") != self._settings.client_id:
            raise InvalidToken("access token was issued to another client")
        return claims

    async def _decode(
        self, jwks: JwksCache, token: str, *, audience: str | None, required: list[str]
    ) -> tuple[dict[str, Any], str]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"malformed token: {exc}") from None
        kid, algorithm = header.get("kid"), header.get("alg")
        if not isinstance(kid, str) or not isinstance(algorithm, str):
            raise InvalidToken("token header lacks kid or alg")
        # SECURITY: the allowed algorithms are configuration; "none" and HS* never are (alg confusion, RFC 8725 2.1).
        if algorithm not in self._settings.algorithms:
            raise InvalidToken(f"algorithm {algorithm[:20]!r} is not allowed")
        key = await jwks.get(kid)
        if key.algorithm_name != algorithm:
            raise InvalidToken("the key with this kid is for another algorithm")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=list(self._settings.algorithms),
                audience=audience,
                issuer=self._settings.issuer,
                leeway=self._settings.clock_skew,
                # SECURITY: PyJWT accepts a token without exp unless told to require it.
                options={"require": required, "verify_aud": audience is not None},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"{exc.__class__.__name__}: {exc}") from None
        # SECURITY: PyJWT converts a string exp with int(); Cognito's times are JSON numbers, so require numbers.
        for name in ("exp", "iat", "nbf", "auth_time"):
            value = claims.get(name)
            if name in claims and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise InvalidToken(f"{name} is not a number")
        if claims["iat"] > self._clock() + self._settings.clock_skew:
            raise InvalidToken("iat is in the future")
        return claims, algorithm


def _at_hash(access_token: str, algorithm: str) -> str:
    digest = _HASHES[algorithm[-3:]](access_token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode("ascii")
