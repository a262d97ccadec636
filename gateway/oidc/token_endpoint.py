"""Calls from the gateway to the IdP's token, revocation and userinfo endpoints (server to server)."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any
from urllib.parse import urlencode

import aiohttp

from ..config import ProviderSettings
from ..errors import IdpUnavailable, SignInFailed, TokenRejected
from .discovery import Endpoints

FORM = "application/x-www-form-urlencoded"
log = logging.getLogger("gateway.idp")


@dataclasses.dataclass(frozen=True)
class TokenResponse:
    id_token: str | None  # a refresh may omit it (OIDC Core 12.2); a sign-in never does
    access_token: str
    refresh_token: str | None
    expires_in: int
    scope: str | None = None

    def __repr__(self) -> str:  # tokens are credentials: keep them out of reprs and logs
        return f"TokenResponse(expires_in={self.expires_in}, refresh_token={'yes' if self.refresh_token else 'no'})"


class TokenEndpoint:
    def __init__(self, http: aiohttp.ClientSession, settings: ProviderSettings) -> None:
        self._http = http
        self._settings = settings
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout)

    def _auth(self, form: dict[str, str]) -> dict[str, str]:
        """client_secret_basic when there is a secret; a public client sends its client_id in the form."""
        if self._settings.client_secret is None:
            form["client_id"] = self._settings.client_id
            return {}
        return {
            "Authorization": aiohttp.encode_basic_auth(self._settings.client_id, self._settings.client_secret.reveal())
        }

    async def exchange_code(
        self, endpoints: Endpoints, *, code: str, verifier: str, redirect_uri: str
    ) -> TokenResponse:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        }
        tokens = self._tokens(await self._post_token(endpoints.token, form))
        if tokens.id_token is None:
            raise SignInFailed("The identity provider returned no ID token.", code="invalid_token_response")
        return tokens

    async def refresh(self, endpoints: Endpoints, refresh_token: str) -> TokenResponse:
        """New ID and access tokens for a refresh token. Cognito sends no new refresh token (without rotation)."""
        body = await self._post_token(endpoints.token, {"grant_type": "refresh_token", "refresh_token": refresh_token})
        return self._tokens(body)

    def _tokens(self, body: dict[str, Any]) -> TokenResponse:
        id_token, access_token = body.get("id_token"), body.get("access_token")
        refresh_token, expires_in = body.get("refresh_token"), body.get("expires_in", 3600)
        if (id_token is not None and not isinstance(id_token, str)) or not isinstance(access_token, str):
            raise SignInFailed(
                "The identity provider did not return the expected tokens.", code="invalid_token_response"
            )
        token_type = body.get("token_type")
        # SECURITY: OIDC Core 3.1.3.3: the token type must be Bearer (case-insensitive); a DPoP or MAC token used
        # as a Bearer token would be the gateway misusing it.
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise SignInFailed("The identity provider returned a token of another type.", code="invalid_token_type")
        if refresh_token is not None and not isinstance(refresh_token, str):
            refresh_token = None
        scope = body.get("scope") if isinstance(body.get("scope"), str) else None
        lifetime = expires_in if isinstance(expires_in, int) and not isinstance(expires_in, bool) else 3600
        return TokenResponse(id_token, access_token, refresh_token, lifetime, scope)

    async def _post_token(self, url: str, form: dict[str, str]) -> dict[str, Any]:
        headers = {**self._auth(form), "Content-Type": FORM}
        # The form is encoded here (as aiohttp's FormData would encode it): bytes skip its multipart machinery.
        encoded = urlencode(form).encode()
        try:
            async with self._http.post(
                url, data=encoded, headers=headers, timeout=self._timeout, allow_redirects=False
            ) as response:
                status = response.status
                try:
                    body = await response.json(content_type=None)
                except ValueError:
                    body = None
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("token endpoint unreachable: %s", exc.__class__.__name__)
            raise IdpUnavailable() from exc
        if status == 200 and isinstance(body, dict):
            return body
        if 400 <= status < 500 and isinstance(body, dict) and isinstance(body.get("error"), str):
            error = body["error"][:64]
            log.info("token endpoint refused the request: %s", error)
            raise TokenRejected(error)
        log.warning("token endpoint answered %s", status)
        raise IdpUnavailable()

    async def revoke(self, endpoints: Endpoints, refresh_token: str) -> bool:
        """Revoke a refresh token (best effort: sign-out goes on whatever the IdP answers)."""
        if endpoints.revocation is None:
            return False
        form = {"token": refresh_token}
        headers = self._auth(form)
        try:
            async with self._http.post(
                endpoints.revocation, data=form, headers=headers, timeout=self._timeout, allow_redirects=False
            ) as response:
                await response.read()
                if response.status != 200:
                    log.warning("revocation answered %s", response.status)
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("revocation failed: %s", exc.__class__.__name__)
            return False

    async def userinfo(self, url: str, access_token: str) -> dict[str, Any]:
        """The userinfo claims (OIDC Core 5.3); raises IdpUnavailable when they cannot be had."""
        headers = {"Authorization": f"Bearer {access_token}", "Accept": "application/json"}
        try:
            async with self._http.get(url, headers=headers, timeout=self._timeout, allow_redirects=False) as response:
                body = await response.json(content_type=None) if response.status == 200 else None
                status = response.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("userinfo failed: %s", exc.__class__.__name__)
            raise IdpUnavailable() from exc
        if not isinstance(body, dict):
            log.warning("userinfo answered %s", status)
            raise IdpUnavailable()
        return body
