"""The session lifecycle around a store: load, refresh, idle tracking, and writing cookies at the right moment.

Refresh. When a session's tokens expire within GATEWAY_REFRESH_BEFORE, the next request refreshes them at the
token endpoint with the refresh token; the user notices nothing. Concurrent requests on one session share a single
refresh (one task per session in this process, plus the store's lock across replicas), and all of them go on with
the new tokens. Only ``invalid_grant`` / ``invalid_client`` end a session (the user was disabled, signed out
globally, or the token revoked); a network error or a 5xx keeps the session until GATEWAY_REFRESH_GRACE past its
tokens' expiry, so an IdP blip signs nobody out.

Cookies. A proxied response is streamed, and aiohttp-session does not save sessions into streamed responses: every
session change is written in the ``on_response_prepare`` signal instead, which runs for every response, streamed or
not, just before its headers go out.
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

from .config import SessionSettings
from .errors import GatewayError, IdpUnavailable, InvalidToken
from .idp_client import IdpClient, TokenRejected
from .provider import Provider
from .redis_store import RefreshBusy
from .session import SessionStore, UserSession
from .tokens import TokenVerifier

log = logging.getLogger("gateway.session")

# Refresh errors that end a session (oauth2-proxy's isFatalRefreshError); anything else is retried later.
FATAL_REFRESH_ERRORS = frozenset({"invalid_grant", "invalid_client"})


class _Outcome:
    def __init__(self, name: str) -> None:
        self.name = name


ENDED: Final = _Outcome("ended")  # the IdP refused the refresh: the session is over
TRANSIENT: Final = _Outcome("transient")  # the IdP could not be asked: keep the session within the grace
_CLEAR: Final = _Outcome("clear")

PENDING = web.RequestKey("pending_session", object)
RECENT_REFRESH_TTL = 60  # seconds a refreshed session is handed to requests that still carry the old cookie


class SessionManager:
    def __init__(
        self,
        store: SessionStore,
        settings: SessionSettings,
        *,
        provider: Provider,
        idp: IdpClient,
        verifier: TokenVerifier,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._settings = settings
        self._provider = provider
        self._idp = idp
        self._verifier = verifier
        self._clock = clock
        self._flights: dict[str, asyncio.Task[UserSession | _Outcome]] = {}
        # Requests of a burst that load the old cookie after its refresh finished get the refreshed session too,
        # instead of refreshing again (with Redis, the store's reload after the lock does the same across replicas).
        self._refreshed: TTLCache[str, UserSession] = TTLCache(maxsize=10_000, ttl=RECENT_REFRESH_TTL)

    async def current(self, request: web.Request) -> UserSession | None:
        """The request's session, refreshed when due; None means the request needs a sign-in."""
        loaded = await self.store.load(request)
        if loaded is None:
            return None
        session = loaded.session
        # changed: the browser's cookie must be rewritten; persist: the server-side copy too (Redis).
        changed = persist = loaded.stale
        now = self._clock()
        if session.refresh_token and self._due(session):
            outcome = await self._refresh(session)
            if outcome is ENDED:
                request[PENDING] = _CLEAR
                return None
            if outcome is TRANSIENT:
                if now >= session.token_expires_at + self._settings.refresh_grace:
                    log.warning(
                        "session of %s ends: tokens expired and the IdP could not refresh them", session.username
                    )
                    return None
            elif isinstance(outcome, UserSession):
                session, changed = outcome, True
        if now - session.last_seen >= self._settings.touch_interval:
            session, changed, persist = dataclasses.replace(session, last_seen=int(now)), True, True
        if persist:
            session = await self.store.persist(session)
        if changed:
            request[PENDING] = session
        return session

    async def start(self, request: web.Request, session: UserSession) -> UserSession:
        """A new session at sign-in: stored now, its cookie written with the response."""
        session = await self.store.persist(session)
        request[PENDING] = session
        return session

    async def end(self, request: web.Request) -> UserSession | None:
        """Sign-out: forget the server-side copy at once and clear the cookies; returns what was signed out."""
        loaded = await self.store.load(request)
        request[PENDING] = _CLEAR
        if loaded is not None:
            self._refreshed.pop(self._flight_key(loaded.session), None)
            await self.store.delete(loaded.session)
        return loaded.session if loaded is not None else None

    async def on_response_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        pending = request.get(PENDING)
        if pending is None:
            return
        # aiohttp 3.14 turns response.cookies into headers *before* this signal runs, so cookies set on the
        # response here would be dropped silently: build them on a scratch response and add the headers ourselves.
        scratch = web.Response()
        if pending is _CLEAR:
            self.store.clear_cookies(request, scratch)
        elif isinstance(pending, UserSession):
            self.store.set_cookie(request, scratch, pending)
        for morsel in scratch.cookies.values():
            response.headers.add("Set-Cookie", morsel.output(header="")[1:])

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
        if not flight.cancelled() and flight.exception() is None and isinstance(flight.result(), UserSession):
            self._refreshed[key] = flight.result()  # type: ignore[assignment]

    def _due(self, session: UserSession) -> bool:
        return self._clock() >= session.token_expires_at - self._settings.refresh_before

    async def _refresh_once(self, session: UserSession) -> UserSession | _Outcome:
        try:
            async with self.store.refresh_lock(session):
                latest = await self.store.reload(session)
                if latest is None:
                    return ENDED  # signed out or revoked meanwhile
                if not self._due(latest):
                    return latest  # another replica refreshed it while we waited for the lock
                return await self._call_idp(latest)
        except RefreshBusy:
            log.warning("refresh lock busy for %s; keeping the session for now", session.username)
            return TRANSIENT
        except GatewayError as exc:
            log.warning("refresh for %s not possible now: %s", session.username, exc.message)
            return TRANSIENT

    async def _call_idp(self, session: UserSession) -> UserSession | _Outcome:
        assert session.refresh_token is not None
        try:
            endpoints = self._provider.endpoints()
            tokens = await self._idp.refresh(endpoints, session.refresh_token)
        except TokenRejected as exc:
            if exc.error in FATAL_REFRESH_ERRORS:
                log.info("refresh refused (%s): session of %s ends", exc.error, session.username)
                await self.store.delete(session)
                return ENDED
            log.warning("refresh for %s failed with %s; will retry", session.username, exc.error)
            return TRANSIENT
        except IdpUnavailable:
            log.warning("refresh for %s: the IdP is unreachable; keeping the session", session.username)
            return TRANSIENT
        assert self._provider.jwks is not None
        try:
            id_claims = await self._verifier.verify_id_token(
                self._provider.jwks, tokens.id_token, nonce=None, access_token=tokens.access_token, sub=session.sub
            )
            access_claims = await self._verifier.verify_access_token(self._provider.jwks, tokens.access_token)
        except InvalidToken as exc:
            log.warning("refreshed tokens for %s rejected (%s): session ends", session.username, exc)
            await self.store.delete(session)
            return ENDED
        refreshed = session.refreshed(
            id_claims,
            token_expires_at=int(min(id_claims["exp"], access_claims["exp"])),
            refresh_token=tokens.refresh_token,
        )
        log.info("refreshed the session of %s", session.username)
        return await self.store.persist(refreshed)
