"""The identity provider as the gateway sees it: endpoints from discovery, keys from JWKS.

Discovery runs at startup and is retried in the background until it works, so the gateway starts (and reports
not-ready on ``/oauth2/readyz``) while the IdP is unreachable, and recovers by itself when it comes back. Nothing
here runs per request once loaded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging

import aiohttp

from .config import CognitoSettings
from .errors import IdpUnavailable
from .jwks import JwksCache

log = logging.getLogger("gateway.provider")

RETRY_DELAYS = (1, 2, 4, 8, 15, 30)


@dataclasses.dataclass(frozen=True)
class Endpoints:
    authorization: str
    token: str
    jwks_uri: str
    end_session: str | None
    revocation: str | None


class Provider:
    def __init__(self, http: aiohttp.ClientSession, settings: CognitoSettings) -> None:
        self._http = http
        self._settings = settings
        self._endpoints: Endpoints | None = None
        self.jwks: JwksCache | None = None
        self.last_error: str | None = "not loaded yet"

    @property
    def ready(self) -> bool:
        return self._endpoints is not None and self.jwks is not None and self.jwks.loaded

    def endpoints(self) -> Endpoints:
        if self._endpoints is None or self.jwks is None:
            raise IdpUnavailable()
        return self._endpoints

    async def load(self) -> None:
        """Discovery, then the first JWKS fetch. Raises IdpUnavailable on any failure."""
        endpoints = await self._discover()
        jwks = JwksCache(self._http, endpoints.jwks_uri, timeout=self._settings.timeout)
        await jwks.refresh()
        self._endpoints, self.jwks, self.last_error = endpoints, jwks, None

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

    async def _discover(self) -> Endpoints:
        issuer = self._settings.issuer
        url = f"{issuer}/.well-known/openid-configuration"
        try:
            timeout = aiohttp.ClientTimeout(total=self._settings.timeout)
            async with self._http.get(url, timeout=timeout, allow_redirects=False) as response:
                if response.status != 200:
                    raise IdpUnavailable(f"discovery at {url} answered {response.status}")
                document = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise IdpUnavailable(f"discovery at {url} failed: {exc.__class__.__name__}") from exc
        if not isinstance(document, dict):
            raise IdpUnavailable(f"discovery at {url} is not a JSON object")
        # SECURITY: OIDC Discovery 4.3: the document must name exactly the issuer we were configured with.
        if document.get("issuer") != issuer:
            raise IdpUnavailable(f"discovery names issuer {str(document.get('issuer'))[:200]!r}, expected {issuer!r}")
        return Endpoints(
            authorization=self._required(document, "authorization_endpoint", "/oauth2/authorize"),
            token=self._required(document, "token_endpoint", "/oauth2/token"),
            jwks_uri=_string(document, "jwks_uri") or f"{issuer}/.well-known/jwks.json",
            end_session=self._endpoint(document, "end_session_endpoint", "/logout"),
            revocation=self._endpoint(document, "revocation_endpoint", "/oauth2/revoke"),
        )

    def _endpoint(self, document: dict[str, object], key: str, domain_path: str) -> str | None:
        """The discovery document's endpoint, else the one on COGNITO_DOMAIN."""
        value = _string(document, key)
        if value is None and self._settings.domain is not None:
            value = f"{self._settings.domain}{domain_path}"
        return value

    def _required(self, document: dict[str, object], key: str, domain_path: str) -> str:
        value = self._endpoint(document, key, domain_path)
        if value is None:
            raise IdpUnavailable(f"discovery has no {key} and COGNITO_DOMAIN is not set")
        return value


def _string(document: dict[str, object], key: str) -> str | None:
    value = document.get(key)
    return value if isinstance(value, str) and value.startswith(("https://", "http://")) else None
