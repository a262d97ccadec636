"""The Redis session backend, for many replicas and for revocation that takes effect at once.

The cookie holds only an opaque random id (256 bits). Redis holds the session under the SHA-256 of that id (so a
copy of the database yields no usable cookie), sealed with the session secret, with a TTL equal to the session's
remaining life. Each user has an index of their sessions, so an administrator can end them all at once
(``python -m gateway sessions revoke --user alice``). Refreshes take a Redis lock, so two replicas never refresh
the same session at once. When Redis cannot be reached, requests that need a session get a 503, never a pass.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from urllib.parse import quote

import redis.asyncio as redis
from redis.exceptions import LockError, RedisError

from .config import SessionSettings
from .crypto import SESSION_PURPOSE, Sealer
from .errors import RefreshBusy, StoreUnavailable
from .session_backends import Loaded, open_session, seal_session
from .session_copies import TrackedCopies
from .user_session import UserSession

log = logging.getLogger("gateway.session")

LOCK_TIMEOUT = 15  # seconds a refresh may hold the lock before Redis frees it for another replica
SESSION_ID_LENGTH = 43  # secrets.token_urlsafe(32)


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("ascii", "replace")).hexdigest()


class RedisBackend:
    def __init__(
        self, settings: SessionSettings, clock: Callable[[], float] = time.time, client: redis.Redis | None = None
    ) -> None:
        assert settings.redis_url is not None
        self._settings = settings
        self._clock = clock
        self._client = client or redis.from_url(
            settings.redis_url, socket_timeout=2, socket_connect_timeout=2, health_check_interval=15
        )
        self._prefix = f"cognito-gateway:{settings.base_cookie_name or settings.cookie_name}:"
        self._sealer = Sealer(settings.keys, SESSION_PURPOSE)
        # Each process keeps the sessions it read, invalidated by Redis the moment any client changes one.
        self._copies = TrackedCopies(settings.redis_url, self._session_key("")) if settings.redis_cache else None

    def _session_key(self, digest: str) -> str:
        return f"{self._prefix}session:{digest}"

    def _user_key(self, username: str) -> str:
        return f"{self._prefix}user:{quote(username, safe='')}"

    async def _get(self, session_id: str, *, copy_ok: bool = True) -> Loaded | None:
        key = self._session_key(_digest(session_id))
        copies = self._copies if copy_ok else None
        if copies is not None:
            copies.start()
            copy = copies.get(key)
            if copy is not None:
                return copy  # type: ignore[no-any-return]
        epoch = copies.epoch if copies is not None else 0
        try:
            blob = await self._client.get(key)
        except RedisError as exc:
            log.warning("redis unavailable: %s", exc.__class__.__name__)
            raise StoreUnavailable() from exc
        loaded = open_session(self._sealer, blob, ttl=None, session_id=session_id) if blob is not None else None
        if copies is not None and loaded is not None:
            copies.keep(key, loaded, epoch)
        return loaded

    @property
    def copies_live(self) -> bool:
        """Whether this process's session copies are in use (Redis's invalidations arrive)."""
        return self._copies is not None and self._copies.live

    def has_copy(self, value: str) -> bool:
        return self._copies is not None and self._copies.get(self._session_key(_digest(value))) is not None

    def _forget(self, digest: str) -> None:
        """This process's own write or delete: its copy goes now (Redis's invalidation follows for the others)."""
        if self._copies is not None:
            self._copies.forget(self._session_key(digest))

    async def load(self, value: str) -> Loaded | None:
        if len(value) != SESSION_ID_LENGTH:
            return None
        return await self._get(value)

    async def persist(self, session: UserSession) -> UserSession:
        # SECURITY: a new session always gets a new random id (256 bits), so no id chosen before sign-in survives it.
        session_id = session.session_id or secrets.token_urlsafe(32)
        session = dataclasses.replace(session, session_id=session_id)
        now = int(self._clock())
        ttl = min(session.created_at + self._settings.lifetime, session.last_seen + self._settings.idle_timeout) - now
        digest, user_key = _digest(session_id), self._user_key(session.username)
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.set(self._session_key(digest), seal_session(self._sealer, session), ex=max(1, ttl))
                pipe.sadd(user_key, digest)
                pipe.expire(user_key, self._settings.lifetime)
                await pipe.execute()
        except RedisError as exc:
            raise StoreUnavailable() from exc
        finally:
            self._forget(digest)
        return session

    def cookie_value(self, session: UserSession) -> str:
        assert session.session_id is not None, "persist gives every session its id"
        return session.session_id

    async def delete(self, session: UserSession) -> None:
        if session.session_id is None:
            return
        digest = _digest(session.session_id)
        self._forget(digest)
        try:
            await self._client.delete(self._session_key(digest))
            await self._client.srem(self._user_key(session.username), digest)
        except RedisError as exc:
            raise StoreUnavailable() from exc

    def lock(self, session: UserSession) -> AbstractAsyncContextManager[None]:
        return self._locked(_digest(session.session_id or ""))

    @asynccontextmanager
    async def _locked(self, digest: str) -> AsyncIterator[None]:
        lock = self._client.lock(f"{self._prefix}lock:{digest}", timeout=LOCK_TIMEOUT, blocking_timeout=LOCK_TIMEOUT)
        try:
            acquired = await lock.acquire()
        except RedisError as exc:
            raise StoreUnavailable() from exc
        if not acquired:
            raise RefreshBusy()
        try:
            yield
        finally:
            try:
                await lock.release()
            except (LockError, RedisError):
                log.warning("refresh lock expired before release")

    async def reload(self, session: UserSession) -> UserSession | None:
        loaded = await self._get(session.session_id or "", copy_ok=False)  # another replica's refresh, never a copy
        return loaded.session if loaded is not None else None

    async def readiness(self) -> str:
        try:
            await self._client.ping()
        except (RedisError, OSError) as exc:
            return f"unreachable: {exc.__class__.__name__}"
        return "ok"

    async def sessions_of(self, username: str) -> list[UserSession]:
        """Every live session of ``username`` (the index is pruned of the ones that expired)."""
        sessions = []
        for digest in await self._client.smembers(self._user_key(username)):
            digest = digest.decode()
            blob = await self._client.get(self._session_key(digest))
            if blob is None:
                await self._client.srem(self._user_key(username), digest)
                continue
            loaded = open_session(self._sealer, blob, ttl=None, session_id=f"sha256:{digest[:12]}")
            if loaded is not None:
                sessions.append(loaded.session)
        return sessions

    async def revoke_user(self, username: str) -> int:
        """End every session of ``username`` at once; returns how many there were."""
        digests = [d.decode() for d in await self._client.smembers(self._user_key(username))]
        removed = 0
        if digests:
            removed = await self._client.delete(*(self._session_key(d) for d in digests))
        await self._client.delete(self._user_key(username))
        return int(removed)

    async def close(self) -> None:
        if self._copies is not None:
            await self._copies.close()
        await self._client.aclose()
