"""The identity provider, behind one façade: ``OidcClient``.

Sign-in and refresh are the same chain (token endpoint → verify the ID token against the JWKS → check the access
token where it is a JWT → fill missing claims from userinfo → an ``Identity``), so it is written once here. The
pieces: ``discovery`` (endpoints), ``jwks`` (signing keys, cached by kid), ``verify`` (token checks),
``token_endpoint`` (server-to-server calls). Discovery runs at startup and is retried in the background until it
works, so the gateway starts (and reports not-ready on ``/oauth2/readyz``) while the IdP is unreachable.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from ..config import ProviderSettings
from ..errors import IdpUnavailable, InvalidToken, SignInFailed
from ..identity import Identity, from_access_token, user_from_claims
from .discovery import Endpoints, discover
from .jwks import JwksCache
from .token_endpoint import TokenEndpoint, TokenResponse
from .verify import TokenVerifier

__all__ = ["Endpoints", "OidcClient", "SignedIn"]

log = logging.getLogger("gateway.oidc")

RETRY_DELAYS = (1, 2, 4, 8, 15, 30)


@dataclasses.dataclass(frozen=True)
class SignedIn:
    """The verified outcome of a sign-in or a refresh."""

    identity: Identity | None  # None: a refresh that told nothing new about the user (keep what the session has)
    expires_at: int  # the earlier of the ID and access tokens' expiry
    auth_time: int
    refresh_token: str | None = dataclasses.field(default=None, repr=False)
    access_token: str | None = dataclasses.field(default=None, repr=False)  # kept with GATEWAY_PASS_ACCESS_TOKEN


_URL_SAFE = re.compile(r"[A-Za-z0-9_-]*")  # base64url: what the gateway's own states, nonces and challenges are


def _query_value(value: str) -> str:
    return value if _URL_SAFE.fullmatch(value) else quote(value, safe="")


class OidcClient:
    def __init__(self, settings: ProviderSettings, *, clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._clock = clock
        self._http: aiohttp.ClientSession | None = None
        self._tokens: TokenEndpoint | None = None
        self._verifier = TokenVerifier(settings, clock)
        self._endpoints: Endpoints | None = None
        self._jwks: JwksCache | None = None
        self._authorize_cache: tuple[tuple[str, str], str] | None = None
        self.last_error: str | None = "not loaded yet"

    def attach(self, http: aiohttp.ClientSession) -> None:
        """The HTTP client to reach the IdP with; opened (and closed) by the app's cleanup context."""
        self._http, self._tokens = http, TokenEndpoint(http, self._settings)

    @property
    def _endpoint(self) -> TokenEndpoint:
        if self._tokens is None:
            raise IdpUnavailable("the IdP client is not open")
        return self._tokens

    # Discovery -------------------------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self._endpoints is not None and self._jwks is not None and self._jwks.loaded

    def endpoints(self) -> tuple[Endpoints, JwksCache]:
        if self._endpoints is None or self._jwks is None:
            raise IdpUnavailable()
        return self._endpoints, self._jwks

    async def load(self) -> None:
        """Discovery, then the first JWKS fetch. Raises IdpUnavailable on any failure."""
        if self._http is None:
            raise IdpUnavailable("the IdP client is not open")
        endpoints = await discover(self._http, self._settings)
        jwks = JwksCache(self._http, endpoints.jwks_uri, timeout=self._settings.timeout, clock=self._clock)
        await jwks.refresh()
        self._endpoints, self._jwks, self.last_error = endpoints, jwks, None

    async def keep_loading(self) -> None:
        """Retry ``load`` with backoff until it succeeds; runs as a background task from startup."""
        attempt = 0
        while not self.ready:
            try:
                await self.load()
                log.info("identity provider ready: %s", self._settings.issuer)
                return
            except IdpUnavailable as exc:
                self.last_error = exc.message
                delay = RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)]
                log.warning("identity provider not ready (%s); retrying in %ss", exc.message, delay)
                attempt += 1
                await asyncio.sleep(delay)

    # The browser's side ----------------------------------------------------------------------------------------
    def authorize_url(self, *, state: str, nonce: str, code_challenge: str, redirect_uri: str) -> str:
        """The IdP's authorize URL for one sign-in: the per-provider part is built once, the fresh values appended."""
        base = self._authorize_base(redirect_uri)
        fresh = f"state={_query_value(state)}&nonce={_query_value(nonce)}&code_challenge={_query_value(code_challenge)}"
        return f"{base}&{fresh}&code_challenge_method=S256"

    def _authorize_base(self, redirect_uri: str) -> str:
        """The authorize endpoint with the parameters that are the same for every sign-in, cached per endpoint."""
        endpoints, _ = self.endpoints()
        key = (endpoints.authorization, redirect_uri)
        if self._authorize_cache is None or self._authorize_cache[0] != key:
            url = URL(endpoints.authorization).update_query(
                response_type="code",
                client_id=self._settings.client_id,
                redirect_uri=redirect_uri,
                scope=" ".join(self._settings.scopes),
            )
            # SECURITY: the per-sign-in parameters are appended below; an endpoint that came with its own copies
            # of them must not end up sending two (the IdP would pick one).
            url = url.without_query_params("state", "nonce", "code_challenge", "code_challenge_method")
            self._authorize_cache = (key, str(url))
        return self._authorize_cache[1]

    def end_session_url(self, post_logout_uri: str) -> str | None:
        """Where to send the browser to end the IdP's own session too; None when the provider has no such endpoint."""
        endpoints = self._endpoints
        if endpoints is None or endpoints.end_session is None:
            return None
        if self._settings.is_cognito:
            # Cognito's /logout ends the hosted-UI session; logout_uri must be a registered sign-out URL.
            query = {"client_id": self._settings.client_id, "logout_uri": post_logout_uri}
        else:
            # OpenID Connect RP-Initiated Logout 1.0: client_id stands in for id_token_hint, which is not kept.
            query = {"client_id": self._settings.client_id, "post_logout_redirect_uri": post_logout_uri}
        return str(URL(endpoints.end_session).update_query(query))

    # Server to server ------------------------------------------------------------------------------------------
    async def sign_in(self, *, code: str, verifier: str, nonce: str, redirect_uri: str) -> SignedIn:
        """Exchange the code and verify what comes back; raises SignInFailed or IdpUnavailable."""
        endpoints, _ = self.endpoints()
        tokens = await self._endpoint.exchange_code(endpoints, code=code, verifier=verifier, redirect_uri=redirect_uri)
        try:
            return await self._verified(tokens, nonce=nonce, sub=None)
        except InvalidToken as exc:
            log.warning("rejected tokens from the IdP: %s", exc)
            raise SignInFailed(
                "The sign-in could not be verified. Please sign in again.", code="invalid_token", status=401
            ) from None

    async def refresh(self, refresh_token: str, *, sub: str) -> SignedIn:
        """New tokens for a session; raises TokenRejected, IdpUnavailable or InvalidToken."""
        endpoints, _ = self.endpoints()
        tokens = await self._endpoint.refresh(endpoints, refresh_token)
        return await self._verified(tokens, nonce=None, sub=sub)

    async def revoke(self, refresh_token: str) -> bool:
        """Best effort: sign-out goes on whatever the IdP answers; only where the provider has the endpoint."""
        if self._endpoints is None:
            return False
        return await self._endpoint.revoke(self._endpoints, refresh_token)

    async def verify_bearer(self, token: str, client_ids: frozenset[str]) -> Identity:
        """A Cognito access token presented by an API client; raises InvalidToken."""
        _, jwks = self.endpoints()
        claims = await self._verifier.verify_access_token(jwks, token, client_ids=client_ids)
        # The token rides along for GATEWAY_PASS_ACCESS_TOKEN; it lives only as long as this request.
        return dataclasses.replace(from_access_token(claims, self._settings.claims), access_token=token)

    async def _verified(self, tokens: TokenResponse, *, nonce: str | None, sub: str | None) -> SignedIn:
        endpoints, jwks = self.endpoints()
        expires_at = int(self._clock()) + tokens.expires_in
        scopes = tokens.scope
        if self._settings.is_cognito:
            access = await self._verifier.verify_access_token(jwks, tokens.access_token)
            expires_at, scopes = int(access["exp"]), str(access.get("scope") or scopes or "")
        if tokens.id_token is not None:
            claims = await self._verifier.verify_id_token(
                jwks, tokens.id_token, nonce=nonce, access_token=tokens.access_token, sub=sub
            )
            expires_at = min(expires_at, int(claims["exp"]))
        elif endpoints.userinfo is not None:
            claims = {"sub": sub}  # a refresh without an ID token (OIDC Core 12.2): userinfo says who it is
        else:
            return SignedIn(None, expires_at, int(self._clock()), tokens.refresh_token, tokens.access_token)
        claims = await self._with_userinfo(endpoints, claims, tokens.access_token)
        identity = dataclasses.replace(
            user_from_claims(claims, self._settings.claims), scopes=frozenset((scopes or "").split())
        )
        auth_time = claims.get("auth_time")
        return SignedIn(
            identity=identity,
            expires_at=expires_at,
            auth_time=int(auth_time) if isinstance(auth_time, int | float) else int(self._clock()),
            refresh_token=tokens.refresh_token,
            access_token=tokens.access_token,
        )

    async def _with_userinfo(self, endpoints: Endpoints, claims: dict[str, Any], access_token: str) -> dict[str, Any]:
        names = self._settings.claims
        if endpoints.userinfo is None or not names.missing(claims, groups=not self._settings.is_cognito):
            return claims
        extra = await self._endpoint.userinfo(endpoints.userinfo, access_token)
        # SECURITY: OIDC Core 5.3.2: userinfo about another subject than the ID token's must not be used.
        if not hmac.compare_digest(str(extra.get("sub", "")).encode(), str(claims["sub"]).encode()):
            raise InvalidToken("userinfo is about another subject")
        return {**extra, **claims}
