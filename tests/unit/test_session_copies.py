"""gateway.session_copies through RedisBackend, on a real redis-server: copies serve reads, and every change made by
anyone (another replica, redis-cli, expiry, a flush) reaches them; when Redis cannot vouch for them, none is used."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from gateway.errors import StoreUnavailable
from gateway.session_copies import PING_EVERY, TrackedCopies
from gateway.session_redis import RedisBackend

from ..cluster import RedisServer
from ..support import FakeClock
from .factories import session_settings, user_session


def gets(server: RedisServer) -> int:
    """How many GETs redis-server has answered (INFO commandstats)."""
    stats = server.cli("INFO", "commandstats")
    line = next((line for line in stats.splitlines() if line.startswith("cmdstat_get:")), "cmdstat_get:calls=0,")
    return int(line.split("calls=")[1].split(",")[0])


async def eventually(check: Callable[[], object], seconds: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not check():
        assert loop.time() < deadline, "not within the time Redis's invalidation takes"
        await asyncio.sleep(0.01)


async def copied(backend: RedisBackend, value: str) -> None:
    """Loaded until this process keeps a copy (a read that overlapped the write's own invalidation is not kept)."""
    for _ in range(100):
        assert await backend.load(value) is not None
        if backend.has_copy(value):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no copy was kept")


@pytest.fixture
async def backends(redis_server: RedisServer, clock: FakeClock) -> AsyncIterator[list[RedisBackend]]:
    """Two replicas' backends on one Redis, each with its copies live."""
    redis_server.cli("FLUSHALL")
    settings = session_settings(store="redis", redis_url=redis_server.url)
    made = [RedisBackend(settings, clock), RedisBackend(settings, clock)]
    for backend in made:
        await backend.readiness()
        await backend.load("A" * 43)  # starts its tracking connection
    await eventually(lambda: all(b.copies_live for b in made))
    yield made
    for backend in made:
        await backend.close()


async def test_a_session_read_once_is_served_from_the_copy(
    backends: list[RedisBackend], redis_server: RedisServer, clock: FakeClock
) -> None:
    first, _ = backends
    session = await first.persist(user_session(clock()))
    value = first.cookie_value(session)
    await copied(first, value)
    before = gets(redis_server)
    for _ in range(20):
        loaded = await first.load(value)
        assert loaded is not None and loaded.session.username == "alice"
    assert gets(redis_server) == before


async def test_sign_out_on_another_replica_reaches_the_copy(backends: list[RedisBackend], clock: FakeClock) -> None:
    first, second = backends
    session = await first.persist(user_session(clock()))
    value = first.cookie_value(session)
    await copied(first, value)
    await copied(second, value)
    await first.delete(session)
    assert await first.load(value) is None  # its own delete: at once
    await eventually(lambda: not second.has_copy(value))
    assert await second.load(value) is None


@pytest.mark.parametrize("change", ["DEL", "SET", "EXPIRE", "FLUSHALL"])
async def test_any_change_anyone_makes_in_redis_reaches_the_copy(
    backends: list[RedisBackend], redis_server: RedisServer, clock: FakeClock, change: str
) -> None:
    first, _ = backends
    session = await first.persist(user_session(clock()))
    value = first.cookie_value(session)
    await copied(first, value)
    [key] = redis_server.cli("KEYS", "*:session:*").split()
    command = {"DEL": ["DEL", key], "SET": ["SET", key, "gAAAAABtampered"], "EXPIRE": ["PEXPIRE", key, "1"]}
    redis_server.cli(*command.get(change, ["FLUSHALL"]))
    await eventually(lambda: not first.has_copy(value))
    assert await first.load(value) is None


async def test_without_redis_no_copy_is_used(clock: FakeClock) -> None:
    server = RedisServer()
    backend = RedisBackend(session_settings(store="redis", redis_url=server.url), clock)
    try:
        await backend.load("A" * 43)
        await eventually(lambda: backend.copies_live)
        session = await backend.persist(user_session(clock()))
        value = backend.cookie_value(session)
        await copied(backend, value)
        server.stop()
        await eventually(lambda: not backend.copies_live)
        with pytest.raises(StoreUnavailable):  # fails closed, as without copies
            await backend.load(value)
    finally:
        await backend.close()


@pytest.fixture
async def live_copies(redis_server: RedisServer) -> AsyncIterator[TrackedCopies]:
    """TrackedCopies on their own, once Redis's invalidations arrive."""
    copies = TrackedCopies(redis_server.url, "test:session:")
    copies.start()
    try:
        await eventually(lambda: copies.live)
        yield copies
    finally:
        await copies.close()


async def test_a_read_that_overlapped_an_invalidation_is_not_kept(
    redis_server: RedisServer, live_copies: TrackedCopies
) -> None:
    copies = live_copies
    began = copies.epoch
    redis_server.cli("SET", "test:session:x", "v2")  # lands while the "read" is in flight
    await eventually(lambda: copies.epoch != began)
    copies.keep("test:session:x", "v1", began)
    assert copies.get("test:session:x") is None
    copies.keep("test:session:x", "v2", copies.epoch)
    assert copies.get("test:session:x") == "v2"


async def test_copies_can_be_turned_off(redis_server: RedisServer, clock: FakeClock) -> None:
    redis_server.cli("FLUSHALL")
    backend = RedisBackend(session_settings(store="redis", redis_url=redis_server.url, redis_cache=False), clock)
    try:
        session = await backend.persist(user_session(clock()))
        value = backend.cookie_value(session)
        await backend.load(value)
        before = gets(redis_server)
        await backend.load(value)
        assert gets(redis_server) == before + 1 and not backend.has_copy(value)
    finally:
        await backend.close()


async def test_copies_are_not_used_once_the_tracking_link_has_been_silent(live_copies: TrackedCopies) -> None:
    """A silent partition: until the watchdog notices, the copies already stop being trusted."""
    copies = live_copies
    copies.keep("test:session:y", "v", copies.epoch)
    assert copies.get("test:session:y") == "v"
    copies._heard -= PING_EVERY + 1  # as if nothing had come for longer than PING_EVERY
    assert copies.get("test:session:y") is None


async def test_closing_at_any_point_of_the_tracking_handshake_is_clean(redis_server: RedisServer) -> None:
    """Shutdown may come while the tracking connection is still connecting or subscribing: close never raises."""
    for turns in range(40):
        copies = TrackedCopies(redis_server.url, "test:session:")
        copies.start()
        for _ in range(turns):
            await asyncio.sleep(0)
        await copies.close()
        assert not copies.live
