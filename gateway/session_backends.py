"""Where sessions live, behind one interface: ``load`` / ``persist`` / ``delete`` / ``lock``.

``CookieBackend`` keeps nothing on the server: the cookie's value *is* the session, sealed (``crypto.Sealer``) under
the session secret, so any replica with the secret reads any session and the gateway scales out with no shared
state.
``session_redis.RedisBackend`` keeps the sealed session in Redis and only an opaque id in the cookie, for instant
revocation and a refresh lock across replicas. Expiry, staleness and the cookie itself are the session manager's
(``session_manager``) and the cookie codec's (``session_cookies``), written once for both.

What a stolen copy of a signed-out cookie can still do in cookie mode: the gateway keeps no list of cookies, so
until one of these comes first, the copy still works: the next token refresh (sign-out revoked the refresh token,
so that refresh is refused and ends the session: at most the token lifetime minus GATEWAY_REFRESH_BEFORE after
the last refresh), the idle timeout, or the absolute lifetime. The Redis backend ends it at once.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

from cachetools import LRUCache

from .config import SessionSettings
from .crypto import SESSION_PURPOSE, InvalidToken, Sealer
from .user_session import UserSession

DECRYPTED_CACHE_SIZE = 2048  # sessions; a few MB at most
_COMPACT = json.JSONEncoder(separators=(",", ":"))  # built once: json.dumps with options builds one per call


@dataclasses.dataclass(frozen=True)
class Loaded:
    session: UserSession
    stale: bool = False  # sealed under an older secret: rewrite it under the first one


class SessionBackend(Protocol):
    """The server-side half of sessions. The session manager depends on this interface only."""

    async def load(self, value: str) -> Loaded | None:
        """The session a cookie value names; None when absent or invalid (never an error for a bad cookie)."""

    async def persist(self, session: UserSession) -> UserSession:
        """Write the server-side copy (a new session gets its id); the cookie backend has none."""

    def cookie_value(self, session: UserSession) -> str:
        """What the session cookie carries for ``session``: the sealed session, or its id."""

    async def delete(self, session: UserSession) -> None:
        """Forget the server-side copy (sign-out, a refused refresh)."""

    def lock(self, session: UserSession) -> AbstractAsyncContextManager[None]:
        """Held while refreshing ``session``; across replicas where the backend is shared."""

    async def reload(self, session: UserSession) -> UserSession | None:
        """The latest copy, after the lock: another replica may have refreshed it meanwhile."""

    async def readiness(self) -> str:
        """ "ok", or why the backend cannot serve."""

    async def close(self) -> None: ...


def seal_session(sealer: Sealer, session: UserSession) -> bytes:
    return sealer.seal(_COMPACT.encode(session.to_dict()).encode())


def open_session(sealer: Sealer, blob: bytes, *, ttl: int | None, session_id: str | None = None) -> Loaded | None:
    """A sealed session, or None for a tampered, truncated or foreign-key value (signed out, never an error)."""
    try:
        plain, stale = sealer.open(blob, ttl=ttl)
        session = UserSession.from_dict(json.loads(plain), session_id=session_id)
    except (InvalidToken, ValueError):
        return None
    return Loaded(session, stale) if session is not None else None


@asynccontextmanager
async def no_lock() -> AsyncIterator[None]:
    yield


class CookieBackend:
    def __init__(self, settings: SessionSettings) -> None:
        self._sealer = Sealer(settings.keys, SESSION_PURPOSE)
        self._lifetime = settings.lifetime
        # Decrypting and parsing the same cookie on every request of a page was the largest cost on the hot path.
        # The key is the exact ciphertext: a hit is only possible for bytes that already decrypted and
        # authenticated under our keys. Lifetime and idle limits are still checked on every request.
        self._opened: LRUCache[str, Loaded] = LRUCache(maxsize=DECRYPTED_CACHE_SIZE)

    async def load(self, value: str) -> Loaded | None:
        loaded = self._opened.get(value)
        if loaded is None:
            # Padding was stripped when written (an "=" would make the cookie value a quoted string).
            blob = (value + "=" * (-len(value) % 4)).encode("ascii", "replace")
            loaded = open_session(self._sealer, blob, ttl=self._lifetime)
            if loaded is not None:
                self._opened[value] = loaded
        return loaded

    async def persist(self, session: UserSession) -> UserSession:
        return session  # nothing on the server: the cookie carries it all

    def cookie_value(self, session: UserSession) -> str:
        return seal_session(self._sealer, session).decode("ascii").rstrip("=")

    async def delete(self, session: UserSession) -> None:
        return None  # nothing on the server; the manager expires the browser's copy

    def lock(self, session: UserSession) -> AbstractAsyncContextManager[None]:
        return no_lock()

    async def reload(self, session: UserSession) -> UserSession | None:
        return session

    async def readiness(self) -> str:
        return "ok"

    async def close(self) -> None:
        return None
