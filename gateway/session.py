"""Sessions: what the gateway keeps about a signed-in user, and the interface of the stores that keep it.

``UserSession`` holds only what the gateway needs: identity claims for the headers, times (creation, last use, token
expiry) and the refresh token. Raw ID and access tokens are not kept.

``SessionStore`` is the one interface behind which sessions live. ``cookie_store.CookieSessionStore`` keeps the whole
session in the browser, encrypted; ``redis_store.RedisSessionStore`` keeps it in Redis, encrypted, with only an
opaque id in the cookie. Both enforce the absolute lifetime and the idle timeout on the server side.
"""

from __future__ import annotations

import dataclasses
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from aiohttp import web


@dataclasses.dataclass(frozen=True)
class UserSession:
    sub: str
    username: str
    email: str | None
    email_verified: bool
    groups: tuple[str, ...]
    preferred_username: str | None
    created_at: int  # when the gateway session began (the absolute lifetime counts from here)
    auth_time: int  # when the user last typed a password at the IdP
    token_expires_at: int  # the ID/access tokens' exp at the last sign-in or refresh
    last_seen: int = 0  # the last request with this session, to within SessionSettings.touch_interval
    refresh_token: str | None = dataclasses.field(default=None, repr=False)
    session_id: str | None = dataclasses.field(default=None, repr=False)  # server-side stores only; never serialised

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
            "seen": self.last_seen,
            "rt": self.refresh_token,
        }

    @classmethod
    def from_dict(cls, data: Any, *, session_id: str | None = None) -> UserSession | None:
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
                last_seen=int(data.get("seen") or data["created"]),
                refresh_token=data.get("rt"),
                session_id=session_id,
            )
        except (KeyError, TypeError, ValueError):
            return None

    @classmethod
    def from_claims(
        cls, id_claims: dict[str, Any], *, refresh_token: str | None, now: float, token_expires_at: int
    ) -> UserSession:
        identity = _identity(id_claims)
        return cls(
            **identity,
            created_at=int(now),
            auth_time=int(id_claims.get("auth_time", now)),
            token_expires_at=token_expires_at,
            last_seen=int(now),
            refresh_token=refresh_token,
        )

    def refreshed(self, id_claims: dict[str, Any], *, token_expires_at: int, refresh_token: str | None) -> UserSession:
        """This session after a refresh: claims as the IdP now states them (groups may have changed), same life."""
        return dataclasses.replace(
            self,
            **_identity(id_claims),
            token_expires_at=token_expires_at,
            # Cognito returns no new refresh token (unless rotation is on): keep the one we have.
            refresh_token=refresh_token or self.refresh_token,
        )

    def expired(self, now: float, *, lifetime: int, idle_timeout: int) -> bool:
        return now >= self.created_at + lifetime or now >= self.last_seen + idle_timeout


def _identity(id_claims: dict[str, Any]) -> dict[str, Any]:
    groups = id_claims.get("cognito:groups") or ()
    if isinstance(groups, str):
        groups = (groups,)
    verified = id_claims.get("email_verified", True)
    email = id_claims.get("email")
    preferred = id_claims.get("preferred_username")
    return {
        "sub": str(id_claims["sub"]),
        "username": str(id_claims.get("cognito:username") or id_claims["sub"]),
        "email": str(email) if email else None,
        # Cognito's ID token has a boolean; userInfo and some tools give the string "true".
        "email_verified": verified is True or (isinstance(verified, str) and verified.lower() == "true"),
        "groups": tuple(str(g) for g in groups if isinstance(g, str)),
        "preferred_username": str(preferred) if preferred else None,
    }


@dataclasses.dataclass(frozen=True)
class Loaded:
    session: UserSession
    stale: bool = False  # encrypted under an older secret: rewrite it under the first one


class SessionStore(Protocol):
    """Where sessions live. The gateway depends on this interface only."""

    async def load(self, request: web.Request) -> Loaded | None:
        """The request's session; None when absent, invalid, past its lifetime or idle too long."""

    async def persist(self, session: UserSession) -> UserSession:
        """Write the server-side copy (a new session gets its id); the cookie store has none and returns it as is."""

    def set_cookie(self, request: web.Request, response: web.StreamResponse, session: UserSession) -> None:
        """Put the session (or its id) into the response's cookies; called before the response is prepared."""

    def clear_cookies(self, request: web.Request, response: web.StreamResponse) -> None: ...

    async def delete(self, session: UserSession) -> None:
        """Forget the server-side copy (sign-out, a refused refresh)."""

    def refresh_lock(self, session: UserSession) -> AbstractAsyncContextManager[None]:
        """Held while refreshing ``session``; across replicas where the store is shared."""

    async def reload(self, session: UserSession) -> UserSession | None:
        """The latest copy, after waiting for the lock: another replica may have refreshed it meanwhile."""

    async def readiness(self) -> str:
        """ "ok", or why the store cannot serve."""

    async def close(self) -> None: ...


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


def gateway_cookie(name: str, prefix: str) -> bool:
    """Whether a cookie belongs to the gateway (session chunks and login state), so it never goes upstream."""
    return name == prefix or name.startswith(prefix + "_")
