"""The provider's endpoints, from its discovery document (OpenID Connect Discovery 1.0).

For Cognito, endpoints the document lacks fall back to COGNITO_DOMAIN (Cognito's hosted-UI domain serves
``/oauth2/*`` and ``/logout``, while the issuer lives on ``cognito-idp``). A generic OIDC provider gets only what
its document lists: no sign-out or revocation is guessed.
"""

from __future__ import annotations

import dataclasses

import aiohttp

from ..config import ProviderSettings
from ..errors import IdpUnavailable


@dataclasses.dataclass(frozen=True)
class Endpoints:
    authorization: str
    token: str
    jwks_uri: str
    end_session: str | None
    revocation: str | None
    userinfo: str | None


async def discover(http: aiohttp.ClientSession, settings: ProviderSettings) -> Endpoints:
    """Fetch and check the discovery document; raises IdpUnavailable on any failure."""
    issuer = settings.issuer
    # OpenID Connect Discovery 4.1: a terminating "/" of the issuer is removed before the well-known path is added.
    url = f"{issuer.rstrip('/')}/.well-known/openid-configuration"
    try:
        timeout = aiohttp.ClientTimeout(total=settings.timeout)
        async with http.get(url, timeout=timeout, allow_redirects=False) as response:
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
    return _endpoints(document, settings)


def _endpoints(document: dict[str, object], settings: ProviderSettings) -> Endpoints:
    fallback = settings.domain if settings.is_cognito else None

    def endpoint(key: str, domain_path: str | None) -> str | None:
        value = document.get(key)
        if isinstance(value, str) and value.startswith(("https://", "http://")):
            return value
        return f"{fallback}{domain_path}" if fallback is not None and domain_path is not None else None

    def required(key: str, domain_path: str) -> str:
        value = endpoint(key, domain_path)
        if value is None:
            hint = " and COGNITO_DOMAIN is not set" if settings.is_cognito else ""
            raise IdpUnavailable(f"discovery has no {key}{hint}")
        return value

    return Endpoints(
        authorization=required("authorization_endpoint", "/oauth2/authorize"),
        token=required("token_endpoint", "/oauth2/token"),
        jwks_uri=endpoint("jwks_uri", None) or f"{settings.issuer.rstrip('/')}/.well-known/jwks.json",
        end_session=endpoint("end_session_endpoint", "/logout"),
        revocation=endpoint("revocation_endpoint", "/oauth2/revoke"),
        userinfo=endpoint("userinfo_endpoint", "/oauth2/userInfo"),
    )
