"""Sessions: what the gateway keeps about a signed-in user, and where.

``UserSession`` holds only what the gateway needs: identity claims for the headers, expiries, and the refresh token
(for the refresh and revocation that come with it). Raw ID and access tokens are not kept.

``SessionStore`` is the one interface the rest of the gateway uses (load, save, clear); ``CookieSessionStore`` keeps
the session in the browser, encrypted with aiohttp-session's ``EncryptedCookieStorage``. A Cognito refresh token
alone is about 1.75 KB, so an encrypted session approaches a browser's 4 KB cookie limit; the value is split across
numbered cookies (``name``, ``name_1``, ``name_2``…) when it must be, and every ``Set-Cookie`` stays under 4 KB.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import web
from aiohttp_session import Session
from aiohttp_session.cookie_storage import EncryptedCookieStorage
from cryptography.fernet import Fernet, MultiFernet

from .config import SessionSettings
from .crypto import SESSION_PURPOSE, fernet_for

log = logging.getLogger("gateway.session")

CHUNK_SIZE = 3800  # value bytes per cookie: with name and attributes, each Set-Cookie stays under 4096
MAX_CHUNKS = 4


@dataclasses.dataclass(frozen=True)
class UserSession:
    sub: str
    username: str
    email: str | None
    email_verified: bool
    groups: tuple[str, ...]
    preferred_username: str | None
    created_at: int  # when the gateway session began (server-side absolute lifetime counts from here)
    auth_time: int  # when the user last typed a password at the IdP
    token_expires_at: int  # the ID/access tokens' exp at the last sign-in or refresh
    refresh_token: str | None = dataclasses.field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": 1,
            "sub": self.sub,
            "user": self.username,
            "email": self.email,
            "ev": self.email_verified,
            "groups": list(self.groups),
            "pu": self.preferred_username,
            "created": self.created_at,
            "auth_time": self.auth_time,
            "exp": self.token_expires_at,
            "rt": self.refresh_token,
        }

    @classmethod
    def from_dict(cls, data: Any) -> UserSession | None:
        """The session in ``data``, or None when it is not one this version of the gateway wrote."""
        if not isinstance(data, dict) or data.get("v") != 1:
            return None
        try:
            return cls(
                sub=str(data["sub"]),
                username=str(data["user"]),
                email=data.get("email"),
                email_verified=bool(data.get("ev")),
                groups=tuple(str(g) for g in data.get("groups") or ()),
                preferred_username=data.get("pu"),
                created_at=int(data["created"]),
                auth_time=int(data["auth_time"]),
                token_expires_at=int(data["exp"]),
                refresh_token=data.get("rt"),
            )
        except (KeyError, TypeError, ValueError):
            return None

    @classmethod
    def from_claims(
        cls, id_claims: dict[str, Any], *, refresh_token: str | None, now: float, token_expires_at: int
    ) -> UserSession:
        groups = id_claims.get("cognito:groups") or ()
        if isinstance(groups, str):
            groups = (groups,)
        verified = id_claims.get("email_verified", True)
        # Cognito's ID token has a boolean; userInfo and some tools give the string "true".
        email_verified = verified is True or (isinstance(verified, str) and verified.lower() == "true")
        username = id_claims.get("cognito:username") or id_claims["sub"]
        preferred = id_claims.get("preferred_username")
        email = id_claims.get("email")
        return cls(
            sub=str(id_claims["sub"]),
            username=str(username),
            email=str(email) if email else None,
            email_verified=email_verified,
            groups=tuple(str(g) for g in groups if isinstance(g, str)),
            preferred_username=str(preferred) if preferred else None,
            created_at=int(now),
            auth_time=int(id_claims.get("auth_time", now)),
            token_expires_at=token_expires_at,
            refresh_token=refresh_token,
        )


class SessionStore(Protocol):
    """Where sessions live. The gateway depends on this interface only."""

    async def load(self, request: web.Request) -> UserSession | None: ...

    async def save(self, request: web.Request, response: web.StreamResponse, session: UserSession) -> None:
        """Write ``session`` to ``response``; must run before the response is prepared."""

    async def clear(self, request: web.Request, response: web.StreamResponse) -> None: ...


class ChunkedEncryptedCookieStorage(EncryptedCookieStorage):
    """aiohttp-session's encrypted cookie storage with key rotation and numbered cookies for large values."""

    def __init__(self, fernet: MultiFernet, settings: SessionSettings) -> None:
        super().__init__(
            Fernet(Fernet.generate_key()),  # replaced below: the parent takes one key, we rotate through several
            cookie_name=settings.cookie_name,
            domain=settings.domain,
            max_age=settings.lifetime,
            path="/",
            # SECURITY: every flag explicit; aiohttp-session's defaults leave Secure and SameSite unset.
            secure=settings.secure,
            httponly=True,
            samesite=settings.samesite,
        )
        self._fernet = fernet  # type: ignore[assignment]

    def chunk_names(self, count: int) -> list[str]:
        return [self.cookie_name if i == 0 else f"{self.cookie_name}_{i}" for i in range(count)]

    def load_cookie(self, request: web.Request) -> str | None:
        parts = []
        for name in self.chunk_names(MAX_CHUNKS):
            value = request.cookies.get(name)
            if value is None:
                break
            parts.append(value)
        # Padding was stripped when saved (an "=" would make the cookie value a quoted string); restore it.
        joined = "".join(parts)
        return joined + "=" * (-len(joined) % 4) if joined else None

    def save_cookie(self, response: web.StreamResponse, cookie_data: str, *, max_age: int | None = None) -> None:
        cookie_data = cookie_data.rstrip("=")
        chunks = [cookie_data[i : i + CHUNK_SIZE] for i in range(0, len(cookie_data), CHUNK_SIZE)]
        if len(chunks) > MAX_CHUNKS:
            raise ValueError(f"session of {len(cookie_data)} bytes does not fit in {MAX_CHUNKS} cookies")
        params = dict(self._cookie_params)
        if max_age is not None:
            params["max_age"] = max_age
        for name, value in zip(self.chunk_names(len(chunks)), chunks, strict=True):
            response.set_cookie(name, value, **params)

    def delete_cookies(self, request: web.Request, response: web.StreamResponse, *, keep: int = 0) -> None:
        """Expire the chunk cookies the browser sent beyond the first ``keep``."""
        for name in self.chunk_names(MAX_CHUNKS)[keep:]:
            if name in request.cookies:
                expire_cookie(response, name, self._cookie_params)


def expire_cookie(response: web.StreamResponse, name: str, params: Any) -> None:
    response.set_cookie(
        name,
        "",
        max_age=0,
        expires="Thu, 01 Jan 1970 00:00:00 GMT",
        path=params.get("path", "/"),
        domain=params.get("domain"),
        secure=params.get("secure"),
        httponly=True,
        samesite=params.get("samesite"),
    )


class CookieSessionStore:
    """The session lives in the browser, encrypted; any replica with the same secret can read it."""

    def __init__(self, settings: SessionSettings, clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._clock = clock
        self.storage = ChunkedEncryptedCookieStorage(fernet_for(settings.keys, SESSION_PURPOSE), settings)

    async def load(self, request: web.Request) -> UserSession | None:
        # A tampered, truncated, expired or foreign-key cookie decrypts to a new, empty session: signed out.
        stored = await self.storage.load_session(request)
        if stored.new or stored.empty:
            return None
        session = UserSession.from_dict(dict(stored))
        if session is None:
            return None
        # SECURITY: the absolute lifetime is enforced here, on the server, not by the cookie's own Max-Age.
        if self._clock() >= session.created_at + self._settings.lifetime:
            return None
        return session

    async def save(self, request: web.Request, response: web.StreamResponse, session: UserSession) -> None:
        remaining = max(1, session.created_at + self._settings.lifetime - int(self._clock()))
        stored = Session(
            None, data={"created": session.created_at, "session": session.to_dict()}, new=True, max_age=remaining
        )
        stored.changed()
        await self.storage.save_session(request, response, stored)
        written = sum(1 for name in self.storage.chunk_names(MAX_CHUNKS) if name in response.cookies)
        self.storage.delete_cookies(request, response, keep=written)

    async def clear(self, request: web.Request, response: web.StreamResponse) -> None:
        self.storage.delete_cookies(request, response)


def gateway_cookie(name: str, prefix: str) -> bool:
    """Whether a cookie belongs to the gateway (session chunks and login state), so it never goes upstream."""
    return name == prefix or name.startswith(prefix + "_")
