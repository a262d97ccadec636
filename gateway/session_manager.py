"""The session lifecycle around a backend: load, expiry, refresh, idle tracking, and the cookie at the right moment.

Expiry. The absolute lifetime (GATEWAY_SESSION_LIFETIME) and the idle timeout are checked here, on the server, for
every backend: a replayed cookie that is itself still valid is refused once either has passed.

Refresh. When a session's tokens expire within GATEWAY_REFRESH_BEFORE (or within half their lifetime, if that is
shorter), the next request refreshes them at the token endpoint with the refresh token; the user notices nothing.
Concurrent requests on one session share a single refresh (one task per session in this process, plus the backend's
lock across replicas), and all of them go on with the new tokens. Only ``invalid_grant`` / ``invalid_client`` end a session (the user was disabled, signed out
globally, or the token revoked); a network error or a 5xx keeps the session until GATEWAY_REFRESH_GRACE past its
tokens' expiry, so an IdP blip signs nobody out.

Cookies. A proxied response is streamed, so a session change is written in ``write_cookies``, which ``create_app``
hooks to ``on_response_prepare``: it runs for every response, streamed or not, just before its headers go out.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Final

from aiohttp import web
from cachetools import TTLCache

from . import metrics
from .config import SessionSettings
from .errors import GatewayError, IdpUnavailable, InvalidToken, RefreshBusy, SignInFailed, TokenRejected
from .identity import Identity
from .oidc import OidcClient, SignedIn
from .session_backends import SessionBackend
from .session_cookies import SessionCookies
from .user_session import UserSession

log = logging.getLogger("gateway.session")

# Refresh errors that end a session (oauth2-proxy's isFatalRefreshError); anything else is retried later.
FATAL_REFRESH_ERRORS = frozenset({"invalid_grant", "invalid_client"})
RECENT_REFRESH_TTL = 60  # seconds a refreshed session is handed to requests that still carry the old cookie


class _Outcome:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


ENDED: Final = _Outcome("ended")  # the IdP refused the refresh: the session is over
TRANSIENT: Final = _Outcome("transient")  # the IdP could not be asked: keep the session within the grace
CLEAR: Final = _Outcome("clear")  # the response must expire the session cookies

PENDING = web.RequestKey("pending_session", object)  # a UserSession to write, or CLEAR
SESSION = web.RequestKey("session", UserSession)  # the request's session, when its identity came from one


class SessionManager:
    def __init__(
        self,
        backend: SessionBackend,
        settings: SessionSettings,
        *,
        oidc: OidcClient,
        audience: str,
        clock: Callable[[], float] = time.time,
        keep_access_token: bool = False,
    ) -> None:
        """``keep_access_token``: GATEWAY_PASS_ACCESS_TOKEN; the session then carries the access token."""
        self.backend = backend
        self._keep_access_token = keep_access_token
        self._audience = audience
        self.cookies = SessionCookies(settings)
        self._settings = settings
        self._oidc = oidc
        self._clock = clock
        self._flights: dict[str, asyncio.Task[UserSession | _Outcome]] = {}
        # Requests of a burst that load the old cookie after its refresh finished get the refreshed session too,
        # instead of refreshing again (with Redis, the backend's reload after the lock does the same across replicas).
        self._refreshed: TTLCache[str, UserSession] = TTLCache(maxsize=10_000, ttl=RECENT_REFRESH_TTL, timer=clock)

    async def _load(self, request: web.Request) -> tuple[UserSession, bool] | None:
        value = self.cookies.read(request)
        loaded = await self.backend.load(value) if value is not None else None
        if loaded is None:
            return None
        # SECURITY: a session minted for another issuer or client (a sibling deployment with the same secret).
        if loaded.session.audience != self._audience:
            return None
        # SECURITY: lifetime and idle timeout are enforced here, on the server, not by the cookie's own Max-Age.
        if loaded.session.expired(
            self._clock(), lifetime=self._settings.lifetime, idle_timeout=self._settings.idle_timeout
        ):
            return None
        return loaded.session, loaded.stale

    async def current(self, request: web.Request) -> UserSession | None:
        """The request's session, refreshed when due; None means the request needs a sign-in."""
        loaded = await self._load(request)
        if loaded is None:
            return None
        session, stale = loaded
        # changed: the browser's cookie must be rewritten; persist: the server-side copy too (Redis).
        changed = persist = stale
        now = self._clock()
        if session.refresh_token and self._due(session):
            outcome = await self._refresh(session)
            if outcome is ENDED:
                request[PENDING] = CLEAR
                return None
            if outcome is TRANSIENT and now >= session.token_expires_at + self._settings.refresh_grace:
                log.warning("session of %r ends: tokens expired and the IdP could not refresh them", session.username)
                return None
            if isinstance(outcome, UserSession):
                session, changed = outcome, True
                if not self._fits(session):  # a refresh brought more groups, or a longer token, than cookies hold
                    request[PENDING] = CLEAR
                    raise _too_large()
        if now - session.last_seen >= self._settings.touch_interval:
            session, changed, persist = dataclasses.replace(session, last_seen=int(now)), True, True
        if persist:
            session = await self.backend.persist(session)
        if changed:
            request[PENDING] = session
        return session

    async def start(self, request: web.Request, signed_in: SignedIn) -> UserSession:
        """A new session at sign-in: stored now, its cookie written with the response (a new value: no fixation)."""
        assert signed_in.identity is not None, "a sign-in always says who signed in"
        now = int(self._clock())
        session = UserSession(
            identity=self._identity(signed_in, signed_in.identity),
            created_at=now,
            auth_time=signed_in.auth_time,
            token_expires_at=signed_in.expires_at,
            token_lifetime=max(0, signed_in.expires_at - now),
            last_seen=now,
            refresh_token=signed_in.refresh_token,
            audience=self._audience,
        )
        session = await self.backend.persist(session)
        if not self._fits(session):
            raise _too_large()
        request[PENDING] = session
        return session

    async def end(self, request: web.Request) -> UserSession | None:
        """Sign-out: forget the server-side copy at once and clear the cookies; returns what was signed out."""
        value = self.cookies.read(request)
        loaded = await self.backend.load(value) if value is not None else None
        request[PENDING] = CLEAR
        if loaded is None:
            return None
        self._refreshed.pop(self._flight_key(loaded.session), None)
        await self.backend.delete(loaded.session)
        return loaded.session

    async def write_cookies(self, request: web.Request, response: web.StreamResponse) -> None:
        """``on_response_prepare``: the pending session change goes into this response's headers."""
        pending = request.get(PENDING)
        if pending is CLEAR:
            self.cookies.clear(request, response)
        elif isinstance(pending, UserSession):
            value = self.backend.cookie_value(pending)
            if value != self.cookies.read(request):
                max_age = pending.remaining(self._clock(), self._settings.lifetime)
                self.cookies.write(request, response, value, max_age=max_age)

    # Refresh ---------------------------------------------------------------------------------------------------
    async def _refresh(self, session: UserSession) -> UserSession | _Outcome:
        key = self._flight_key(session)
        recent = self._refreshed.get(key)
        if recent is not None and not self._due(recent):
            return recent
        flight = self._flights.get(key)
        if flight is None:
            flight = asyncio.ensure_future(self._refresh_once(session))
            self._flights[key] = flight
            flight.add_done_callback(lambda done: self._finished(key, done))
        # shield: one request giving up (its client went away) must not cancel the refresh the others wait for.
        return await asyncio.shield(flight)

    @staticmethod
    def _flight_key(session: UserSession) -> str:
        return session.session_id or hashlib.sha256((session.refresh_token or "").encode()).hexdigest()

    def _finished(self, key: str, flight: asyncio.Task[UserSession | _Outcome]) -> None:
        self._flights.pop(key, None)
        if not flight.cancelled() and flight.exception() is None:
            result = flight.result()
            metrics.session_refreshed(result.name if isinstance(result, _Outcome) else "refreshed")
            if isinstance(result, UserSession):
                self._refreshed[key] = result

    def _fits(self, session: UserSession) -> bool:
        if self.cookies.fits(self.backend.cookie_value(session)):
            return True
        log.warning("the session of %r does not fit in cookies; use the Redis store", session.username)
        return False

    def _identity(self, signed_in: SignedIn, identity: Identity) -> Identity:
        """The identity to keep: with the new access token when the upstream is to get it, else without any."""
        return dataclasses.replace(identity, access_token=signed_in.access_token if self._keep_access_token else None)

    def _due(self, session: UserSession) -> bool:
        # Tokens that live no longer than GATEWAY_REFRESH_BEFORE (5 minutes, Keycloak's default and Cognito's
        # shortest, against a default of 300 s) would be due again as soon as they are refreshed, so every request
        # would refresh: they are refreshed halfway through their life instead.
        margin = self._settings.refresh_before
        if session.token_lifetime:
            margin = min(margin, session.token_lifetime // 2)
        return self._clock() >= session.token_expires_at - margin

    async def _refresh_once(self, session: UserSession) -> UserSession | _Outcome:
        try:
            async with self.backend.lock(session):
                latest = await self.backend.reload(session)
                if latest is None:
                    return ENDED  # signed out or revoked meanwhile
                if not self._due(latest):
                    return latest  # another replica refreshed it while we waited for the lock
                return await self._call_idp(latest)
        except RefreshBusy:
            log.warning("refresh lock busy for %r; keeping the session for now", session.username)
            return TRANSIENT
        except GatewayError as exc:
            log.warning("refresh for %r not possible now: %s", session.username, exc.message)
            return TRANSIENT

    async def _call_idp(self, session: UserSession) -> UserSession | _Outcome:
        assert session.refresh_token is not None
        try:
            signed_in = await self._oidc.refresh(session.refresh_token, sub=session.identity.sub)
        except TokenRejected as exc:
            if exc.error in FATAL_REFRESH_ERRORS:
                log.info("refresh refused (%s): session of %r ends", exc.error, session.username)
                await self.backend.delete(session)
                return ENDED
            log.warning("refresh for %r failed with %s; will retry", session.username, exc.error)
            return TRANSIENT
        except IdpUnavailable:
            log.warning("refresh for %r: the IdP is unreachable; keeping the session", session.username)
            return TRANSIENT
        except InvalidToken as exc:
            log.warning("refreshed tokens for %r rejected (%s): session ends", session.username, exc)
            await self.backend.delete(session)
            return ENDED
        refreshed = session.refreshed(
            self._identity(signed_in, signed_in.identity or session.identity),
            token_expires_at=signed_in.expires_at,
            refresh_token=signed_in.refresh_token,
            token_lifetime=max(0, signed_in.expires_at - int(self._clock())),
        )
        log.info("refreshed the session of %r", session.username)
        return await self.backend.persist(refreshed)


def _too_large() -> SignInFailed:
    """The page a user gets when their session cannot be kept in cookies, at sign-in or when a refresh grew it."""
    return SignInFailed(
        "Your account carries more information (such as group memberships) than fits in browser cookies. "
        "The operator can switch this gateway to the Redis session store (GATEWAY_SESSION_STORE=redis).",
        code="session_too_large",
    )
