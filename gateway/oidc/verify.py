"""Strict verification of ID tokens (OpenID Connect Core 3.1.3.7) and Cognito access tokens, with PyJWT.

Inputs to a verification come from configuration and discovery, never from the token: the algorithms are
GATEWAY_TOKEN_ALGORITHMS, the issuer is the configured one, the key is looked up by ``kid`` in the IdP's JWKS. Every
time claim is required and typed. With a Cognito provider, ``token_use`` keeps an ID token from being replayed as an
access token and back; Cognito access tokens have no ``aud``, so their ``client_id`` is checked instead. A generic
OIDC provider's access token may be opaque: it is used, never parsed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from typing import Any

import jwt
from cachetools import LRUCache

from ..config import ProviderSettings
from ..errors import InvalidToken
from .jwks import JwksCache

HEADER_CACHE_SIZE = 64  # distinct token headers kept decoded; a flood of forged ones only evicts each other
_HASHES = {"256": hashlib.sha256, "384": hashlib.sha384, "512": hashlib.sha512}


class TokenVerifier:
    def __init__(self, settings: ProviderSettings, clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._clock = clock
        # An IdP signs every token with one of a few keys, so the header segment repeats from token to token:
        # its decoding is kept, and PyJWT parses each token once (in ``jwt.decode``), not twice.
        self._headers: LRUCache[str, dict[str, Any]] = LRUCache(maxsize=HEADER_CACHE_SIZE)

    async def verify_id_token(
        self, jwks: JwksCache, token: str, *, nonce: str | None, access_token: str, sub: str | None = None
    ) -> dict[str, Any]:
        """Verify an ID token from a sign-in (``nonce`` given) or from a refresh (``sub`` of the session given)."""
        cognito = self._settings.is_cognito
        required = ["exp", "iat", "iss", "aud", "sub", *(["token_use"] if cognito else [])]
        claims, algorithm = await self._decode(jwks, token, audience=self._settings.client_id, required=required)
        if cognito and claims.get("token_use") != "id":
            raise InvalidToken("token_use is not id")
        self._check_authorized_party(claims)
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

    def _check_authorized_party(self, claims: dict[str, Any]) -> None:
        """OIDC Core 3.1.3.7 steps 3-5: audiences besides ours are trusted only when ``azp`` names our client."""
        client_id, aud, azp = self._settings.client_id, claims.get("aud"), claims.get("azp")
        others = isinstance(aud, list) and any(audience != client_id for audience in aud)
        # SECURITY: a token issued to another party that merely lists us among its audiences is not ours.
        if others and azp is None:
            raise InvalidToken("the ID token has other audiences too and no azp")
        if azp is not None and azp != client_id:
            raise InvalidToken("the ID token was issued to another party (azp)")

    async def verify_access_token(
        self, jwks: JwksCache, token: str, *, client_ids: frozenset[str] | None = None
    ) -> dict[str, Any]:
        """A Cognito access token issued to our client (sign-in, refresh) or to one of ``client_ids`` (Bearer)."""
        claims, _ = await self._decode(
            jwks, token, audience=None, required=["exp", "iat", "iss", "sub", "token_use", "client_id"]
        )
        # SECURITY: Cognito access tokens have no aud; client_id and token_use stand in for it.
        if claims.get("token_use") != "access":
            raise InvalidToken("token_use is not access")
        allowed = client_ids if client_ids is not None else frozenset({self._settings.client_id})
        if claims.get("client_id") not in allowed:
            raise InvalidToken("access token was issued to another client")
        return claims

    async def _decode(
        self, jwks: JwksCache, token: str, *, audience: str | None, required: list[str]
    ) -> tuple[dict[str, Any], str]:
        header = self._header(token)
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
                # SECURITY: PyJWT accepts a token without exp unless told to require it. The times are checked
                # below against the injected clock, which PyJWT cannot take.
                options={
                    "require": required,
                    "verify_aud": audience is not None,
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"{exc.__class__.__name__}: {exc}") from None
        self._check_times(claims)
        return claims, algorithm

    def _header(self, token: str) -> dict[str, Any]:
        """The token's header (only to choose the key: ``jwt.decode`` then verifies the whole token, header too)."""
        segment = token.partition(".")[0]
        header = self._headers.get(segment)
        if header is None:
            try:
                header = jwt.get_unverified_header(token)
            except jwt.PyJWTError as exc:
                raise InvalidToken(f"malformed token: {exc}") from None
            self._headers[segment] = header
        return header

    def _check_times(self, claims: dict[str, Any]) -> None:
        # SECURITY: PyJWT converts a string exp with int(); OIDC's times are JSON numbers, so require numbers.
        for name in ("exp", "iat", "nbf", "auth_time"):
            value = claims.get(name)
            if name in claims and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise InvalidToken(f"{name} is not a number")
        now, leeway, longest = self._clock(), self._settings.clock_skew, self._settings.max_token_lifetime
        if claims["exp"] <= now - leeway:
            raise InvalidToken("the token has expired")
        if claims["iat"] > now + leeway:
            raise InvalidToken("iat is in the future")
        if "nbf" in claims and claims["nbf"] > now + leeway:
            raise InvalidToken("the token is not valid yet (nbf)")
        # SECURITY: an exp of 1e300, or a lifetime far beyond what the provider issues, is a forged or broken token
        # that would otherwise live for ever (in a cache, a session).
        if claims["exp"] > now + longest + leeway or claims["exp"] - claims["iat"] > longest:
            raise InvalidToken(f"the token's lifetime exceeds GATEWAY_MAX_TOKEN_LIFETIME ({longest} s)")


def _at_hash(access_token: str, algorithm: str) -> str:
    digest = _HASHES[algorithm[-3:]](access_token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode("ascii")
