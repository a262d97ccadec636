"""The cookie session store: the whole session lives in the browser, encrypted (aiohttp-session's
``EncryptedCookieStorage``, Fernet). Any replica with the same secret reads any session, so the gateway scales
out with no shared state.

A Cognito refresh token alone is about 1.75 KB, so an encrypted session approaches a browser's 4 KB cookie limit; the
value is split across numbered cookies (``name``, ``name_1``, ``name_2``…) when it must be, and every
``Set-Cookie`` stays under 4 KB.

What a stolen copy of a signed-out cookie can still do: the gateway keeps no list of cookies, so until one of these
comes first, the copy still works: the next token refresh (sign-out revoked the refresh token, so that refresh is
refused and ends the session: at most the token lifetime minus GATEWAY_REFRESH_BEFORE after the last refresh),
the idle timeout, or the absolute lifetime. The Redis store ends it at once.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from aiohttp import web
from aiohttp_session.cookie_storage import EncryptedCookieStorage
from cachetools import LRUCache
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from .config import SessionSettings
from .crypto import SESSION_PURPOSE, fernet_for
from .session import Loaded, UserSession, expire_cookie

log = logging.getLogger("gateway.session")

CHUNK_SIZE = 3800  # value bytes per cookie: with name and attributes, each Set-Cookie stays under 4096
MAX_CHUNKS = 4
DECRYPTED_CACHE_SIZE = 2048  # sessions; a few MB at most


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


class CookieSessionStore:
    def __init__(self, settings: SessionSettings, clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._clock = clock
        self._all_keys = fernet_for(settings.keys, SESSION_PURPOSE)
        self._first_key = fernet_for(settings.keys[:1], SESSION_PURPOSE)
        self.storage = ChunkedEncryptedCookieStorage(self._all_keys, settings)
        # Decrypting and parsing the same cookie on every request of a page was the largest cost on the hot path.
        # The key is the exact ciphertext: a hit is only possible for bytes that already decrypted and
        # authenticated under our keys. Lifetime and idle limits are still checked on every request.
        self._decrypted: LRUCache[str, Loaded] = LRUCache(maxsize=DECRYPTED_CACHE_SIZE)

    async def load(self, request: web.Request) -> Loaded | None:
        value = self.storage.load_cookie(request)
        if value is None:
            return None
        loaded = self._decrypted.get(value)
        if loaded is None:
            loaded = self._decrypt(value)
            if loaded is None:
                return None
            self._decrypted[value] = loaded
        # SECURITY: lifetime and idle timeout are enforced here, on the server, not by the cookie's own Max-Age.
        if loaded.session.expired(
            self._clock(), lifetime=self._settings.lifetime, idle_timeout=self._settings.idle_timeout
        ):
            return None
        return loaded

    def _decrypt(self, value: str) -> Loaded | None:
        token, stale = value.encode("ascii", "replace"), False
        # A tampered, truncated or foreign-key cookie decrypts to nothing: signed out, never an error.
        try:
            plain = self._first_key.decrypt(token, ttl=self._settings.lifetime)
        except InvalidToken:
            try:
                plain, stale = self._all_keys.decrypt(token, ttl=self._settings.lifetime), True
            except InvalidToken:
                return None
        try:
            session = UserSession.from_dict(json.loads(plain).get("session"))
        except (ValueError, AttributeError):
            return None
        return Loaded(session, stale=stale) if session is not None else None

    async def persist(self, session: UserSession) -> UserSession:
        return session  # nothing on the server: set_cookie writes it

    def set_cookie(self, request: web.Request, response: web.StreamResponse, session: UserSession) -> None:
        remaining = max(1, session.created_at + self._settings.lifetime - int(self._clock()))
        # aiohttp-session's layout ({"created", "session"}), encrypted under the first secret.
        data = json.dumps({"created": int(self._clock()), "session": session.to_dict()}).encode()
        self.storage.save_cookie(response, self._all_keys.encrypt(data).decode("ascii"), max_age=remaining)
        written = sum(1 for name in self.storage.chunk_names(MAX_CHUNKS) if name in response.cookies)
        self.storage.delete_cookies(request, response, keep=written)

    def clear_cookies(self, request: web.Request, response: web.StreamResponse) -> None:
        self.storage.delete_cookies(request, response)

    async def delete(self, session: UserSession) -> None:
        return None  # nothing on the server to forget; clear_cookies removes the browser's copy

    def refresh_lock(self, session: UserSession) -> AbstractAsyncContextManager[None]:
        return _no_lock()

    async def reload(self, session: UserSession) -> UserSession | None:
        return session

    async def readiness(self) -> str:
        return "ok"

    async def close(self) -> None:
        return None


@asynccontextmanager
async def _no_lock() -> AsyncIterator[None]:
    yield
