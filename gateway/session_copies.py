"""Local copies of the Redis sessions, kept true by Redis itself (server-assisted client-side caching).

Reading the session from Redis on every request costs a round trip and most of a request's CPU. So each gateway
process keeps the sessions it has read, and Redis tells it the moment one changes: a dedicated connection turns
on ``CLIENT TRACKING ... BCAST PREFIX <session prefix>``, redirected to itself and subscribed to
``__redis__:invalidate``, and Redis then names every session key that any client writes, deletes or that
expires or is evicted. Sign-out on another replica, ``python -m gateway sessions revoke`` and an operator's
``DEL`` all reach every process within a network round trip, as they would without the copies.

When the copies may not be trusted, they are not used: until the tracking connection is subscribed, after it
fails (every copy is dropped, and it reconnects), and when it has not answered a PING in time (a silent
partition). A read that raced an invalidation is not kept (``epoch``). ``MAX_AGE`` bounds a copy's life
regardless, as a last line. Expiry, idle timeout and refresh stay the session manager's, checked on every request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as redis
from cachetools import TTLCache
from redis.exceptions import RedisError

log = logging.getLogger("gateway.session")

COPIES_KEPT = 10_000  # sessions per process
MAX_AGE = 30.0  # seconds a copy is trusted at most, even with no invalidation
PING_EVERY = 5.0  # copies are used only while the tracking connection answered within this; it is PINGed twice as often
RECONNECT_AFTER = 1.0
HANDSHAKE_TIMEOUT = 2.0  # seconds for each step of connecting and subscribing (listening has no timeout: PINGs)
INVALIDATE_CHANNEL = "__redis__:invalidate"


class _Closing(Exception):
    """The handshake stops between steps when the copies are being closed."""


class TrackedCopies:
    """``get``/``keep``/``forget`` copies by Redis key; only while Redis's invalidations are known to arrive."""

    def __init__(self, url: str, prefix: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._pool = redis.ConnectionPool.from_url(
            url, protocol=2, socket_connect_timeout=HANDSHAKE_TIMEOUT, socket_timeout=HANDSHAKE_TIMEOUT
        )
        self._prefix = prefix
        self._copies: TTLCache[str, Any] = TTLCache(maxsize=COPIES_KEPT, ttl=MAX_AGE, timer=clock)
        self._task: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self._listening: Any = None  # the subscribed connection while the tracker waits on it (no other await)
        self._heard = 0.0  # loop time of the tracking connection's last message (a PONG at least every PING_EVERY)
        self.live = False  # True only while invalidations are known to arrive
        self.epoch = 0  # bumped by every invalidation: a read that spans one is not kept

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._track_forever())

    def get(self, key: str) -> Any | None:
        # SECURITY: a copy is used only while the link has answered within PING_EVERY: during a silent partition
        # invalidations may be lost, so Redis is asked (and fails closed) instead.
        if not self.live or asyncio.get_running_loop().time() - self._heard > PING_EVERY:
            return None
        return self._copies.get(key)

    def keep(self, key: str, value: Any, epoch: int) -> None:
        """Keep what was read at ``epoch``, unless an invalidation came while it was being read."""
        # SECURITY: a read that overlapped an invalidation may carry what was just deleted; it is not kept.
        if self.live and epoch == self.epoch:
            self._copies[key] = value

    def forget(self, key: str) -> None:
        self._copies.pop(key, None)

    def _drop_all(self) -> None:
        self.live = False
        self.epoch += 1
        self._copies.clear()

    def _invalidated(self, keys: list[bytes] | None) -> None:
        self.epoch += 1
        if keys is None:  # FLUSHDB / FLUSHALL
            self._copies.clear()
            return
        for key in keys:
            self._copies.pop(key.decode("utf-8", "replace"), None)

    async def _track_forever(self) -> None:
        # redis-py may turn the cancellation of a pending read into its own error: the flag ends the loop anyway.
        while not self._closing.is_set():
            try:
                await self._track_once()
            except Exception as exc:  # any failure: the copies are off, and it reconnects
                if self.live and not self._closing.is_set():
                    log.warning(
                        "redis invalidations lost (%s): session copies off until reconnected", type(exc).__name__
                    )
            finally:
                self._drop_all()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), RECONNECT_AFTER)

    async def _track_once(self) -> None:
        conn = self._pool.make_connection()
        try:
            if not await self._subscribe(conn):
                return
            self.epoch += 1  # reads begun before the subscription may have missed an invalidation: not kept
            self._heard = asyncio.get_running_loop().time()
            self.live = True
            self._listening = conn
            await self._listen(conn)
        finally:
            self._listening = None
            await conn.disconnect()

    async def _subscribe(self, conn: Any) -> bool:
        """Connect, turn tracking on (redirected to this very connection) and subscribe; False once closing began."""
        await conn.connect()
        client_id = await self._ask(conn, "CLIENT", "ID")
        await self._ask(conn, "CLIENT", "TRACKING", "ON", "REDIRECT", client_id, "BCAST", "PREFIX", self._prefix)
        await self._ask(conn, "SUBSCRIBE", INVALIDATE_CHANNEL)
        return not self._closing.is_set()

    async def _ask(self, conn: Any, *command: Any) -> Any:
        """One step of the handshake; none once closing began (each may take up to HANDSHAKE_TIMEOUT)."""
        if self._closing.is_set():
            raise _Closing()
        await conn.send_command(*command)
        return await conn.read_response()

    async def _listen(self, conn: Any) -> None:
        """Apply invalidations as they come, while a watchdog PINGs (every message counts as heard)."""
        watchdog = asyncio.get_running_loop().create_task(self._ping(conn))
        try:
            while True:
                message = await conn.read_response(timeout=math.inf)
                self._heard = asyncio.get_running_loop().time()
                if isinstance(message, list) and message[:2] == [b"message", INVALIDATE_CHANNEL.encode()]:
                    self._invalidated(message[2])
        finally:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog

    async def _ping(self, conn: Any) -> None:
        """A PING every PING_EVERY / 2; nothing heard for PING_EVERY means the link is gone (a silent partition)."""
        loop = asyncio.get_running_loop()
        while loop.time() - self._heard <= PING_EVERY:
            await conn.send_command("PING")
            await asyncio.sleep(PING_EVERY / 2)
        log.warning("redis tracking connection silent for %.0fs: session copies off", PING_EVERY)
        self._drop_all()
        await conn.disconnect()  # the reader fails, and the connection is made again

    async def close(self) -> None:
        """Let the tracker end at its next step; a subscribed connection is closed under it to end its read.

        A connection still connecting or subscribing is left to finish that step (HANDSHAKE_TIMEOUT at most):
        closing it under redis-py then leaks its socket, and cancelling it is not reliably passed on.
        """
        self._closing.set()
        task, self._task = self._task, None
        if task is not None:
            if self._listening is not None:
                with contextlib.suppress(RedisError, OSError):
                    await self._listening.disconnect()
            # The step under way ends first: a connect with redis-py's own round trips is the longest.
            done, _ = await asyncio.wait([task], timeout=HANDSHAKE_TIMEOUT * 4)
            if not done:
                task.cancel()
                await asyncio.wait([task], timeout=1)
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: the tracker's own errors during shutdown are not news
        await self._pool.disconnect()
