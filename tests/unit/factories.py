"""Builders for unit tests: settings, identities, sessions and requests, each saying only what a test changes."""

from __future__ import annotations

import base64
import dataclasses
import secrets
from collections.abc import Iterable, Mapping
from http.cookies import Morsel, SimpleCookie
from typing import Any

from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.config import ProviderSettings, SessionSettings
from gateway.identity import Identity
from gateway.user_session import UserSession

COOKIE = "_cognito_gateway"
AUDIENCE = "https://idp.example/pool gateway"  # the issuer and client id a session is bound to


def new_key() -> bytes:
    """One GATEWAY_SESSION_SECRET entry, decoded: 32 random bytes."""
    return secrets.token_bytes(32)


def session_settings(**changes: Any) -> SessionSettings:
    defaults: dict[str, Any] = {
        "keys": (new_key(),),
        "cookie_name": COOKIE,
        "lifetime": 12 * 3600,
        "login_timeout": 15 * 60,
        "secure": True,
        "samesite": "Lax",
        "domain": None,
    }
    return SessionSettings(**{**defaults, **changes})


def provider_settings(**changes: Any) -> ProviderSettings:
    defaults: dict[str, Any] = {
        "issuer": "https://idp.example/pool",
        "domain": None,
        "client_id": "gateway",
        "client_secret": None,
        "scopes": ("openid", "email"),
        "algorithms": ("RS256",),
        "clock_skew": 60,
        "timeout": 5,
    }
    return ProviderSettings(**{**defaults, **changes})


def identity(**changes: Any) -> Identity:
    """alice: verified e-mail at example.com, in the admins group."""
    defaults: dict[str, Any] = {
        "sub": "sub-alice",
        "username": "alice",
        "email": "alice@example.com",
        "email_verified": True,
        "groups": ("admins",),
    }
    return Identity(**{**defaults, **changes})


def user_session(now: float, **changes: Any) -> UserSession:
    """alice's session, begun and last seen at ``now``, tokens valid for an hour, with a refresh token."""
    defaults: dict[str, Any] = {
        "identity": identity(),
        "created_at": int(now),
        "auth_time": int(now),
        "token_expires_at": int(now) + 3600,
        "last_seen": int(now),
        "refresh_token": "refresh-token-of-alice",
        "audience": AUDIENCE,
    }
    return dataclasses.replace(UserSession(**defaults), **changes)


def request(
    path: str = "/",
    *,
    method: str = "GET",
    cookies: Mapping[str, str] | None = None,
    headers: Iterable[tuple[str, str]] = (),
    app: web.Application | None = None,
) -> web.Request:
    """A request as aiohttp's server would hand it over; ``cookies`` become one Cookie header."""
    all_headers = list(headers)
    if cookies:
        all_headers.append(("Cookie", "; ".join(f"{name}={value}" for name, value in cookies.items())))
    return make_mocked_request(method, path, headers=all_headers or None, app=app)


def set_cookies(response: web.StreamResponse) -> dict[str, Morsel[str]]:
    """Every cookie ``response`` sets, by name: from ``response.cookies`` and from raw Set-Cookie headers."""
    found: dict[str, Morsel[str]] = dict(response.cookies)
    for header in response.headers.getall("Set-Cookie", []):
        parsed: SimpleCookie = SimpleCookie()
        parsed.load(header)
        found.update(parsed)
    return found


def expired(morsel: Morsel[str]) -> bool:
    return morsel["max-age"] == "0" and morsel.value == ""


def legacy_fernet(secret: bytes, purpose: bytes) -> Fernet:
    """The key releases before the AES-GCM-SIV format sealed with: HKDF-SHA256 of the secret, the purpose as info."""
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(secret)
    return Fernet(base64.urlsafe_b64encode(key))
