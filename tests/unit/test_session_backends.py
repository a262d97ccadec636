"""gateway.session_backends and gateway.session_redis: one contract, run against CookieBackend and against
RedisBackend on a real redis-server; then what only one of them does."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from gateway.crypto import SESSION_PURPOSE
from gateway.errors import StoreUnavailable
from gateway.session_backends import CookieBackend, SessionBackend
from gateway.session_redis import RedisBackend
from gateway.user_session import UserSession

from ..cluster import RedisServer
from ..support import FakeClock, free_port
from .factories import identity, legacy_fernet, new_key, session_settings, user_session

Make = Callable[..., Awaitable[SessionBackend]]


@pytest.fixture(params=["cookie", "redis"])
async def make(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[Make]:
    """Builds backends of the kind under test; Redis ones share this module's redis-server (and are flushed)."""
    opened: list[SessionBackend] = []
    url = None
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        url = server.url
        server.cli("FLUSHALL")

    async def build(**changes: object) -> SessionBackend:
        settings = session_settings(**({"store": "redis", "redis_url": url} if url else {}), **changes)
        backend: SessionBackend = RedisBackend(settings, clock) if url else CookieBackend(settings)
        opened.append(backend)
        return backend

    yield build
    for backend in opened:
        await backend.close()


async def stored(backend: SessionBackend, session: UserSession) -> tuple[UserSession, str]:
    """``session`` persisted, and the cookie value that names it."""
    persisted = await backend.persist(session)
    return persisted, backend.cookie_value(persisted)


def same(a: UserSession, b: UserSession) -> bool:
    return dataclasses.replace(a, session_id=None) == dataclasses.replace(b, session_id=None)


# The contract ----------------------------------------------------------------------------------------------------
async def test_a_persisted_session_loads_back_whole(make: Make, clock: FakeClock) -> None:
    backend = await make()
    session = user_session(clock(), identity=identity(groups=("a", "b"), scopes=frozenset({"openid"})))
    _, value = await stored(backend, session)
    loaded = await backend.load(value)
    assert loaded is not None and not loaded.stale
    assert same(loaded.session, session) and loaded.session.refresh_token == "refresh-token-of-alice"


async def test_the_cookie_value_gives_nothing_away(make: Make, clock: FakeClock) -> None:
    backend = await make()
    _, value = await stored(backend, user_session(clock()))
    assert "alice" not in value and "refresh-token" not in value
    assert value.isascii() and "=" not in value and ";" not in value


async def test_another_backend_with_the_same_secret_loads_it(make: Make, clock: FakeClock) -> None:
    """Replicas share nothing but the secret (and, with Redis, the server)."""
    keys = (new_key(),)
    first, second = await make(keys=keys), await make(keys=keys)
    _, value = await stored(first, user_session(clock()))
    loaded = await second.load(value)
    assert loaded is not None and loaded.session.username == "alice"


@pytest.mark.parametrize("value", ["", "x", "A" * 43, "not a cookie value ☃", "gAAAAAB" + "x" * 200])
async def test_garbage_loads_as_no_session(make: Make, value: str) -> None:
    assert await (await make()).load(value) is None


async def test_a_tampered_value_loads_as_no_session(make: Make, clock: FakeClock) -> None:
    backend = await make()
    _, value = await stored(backend, user_session(clock()))
    for position in (0, len(value) // 2, len(value) - 1):
        flipped = value[:position] + ("A" if value[position] != "A" else "B") + value[position + 1 :]
        assert await backend.load(flipped) is None, position


async def test_a_value_under_a_foreign_secret_loads_as_no_session(make: Make, clock: FakeClock) -> None:
    _, value = await stored(await make(), user_session(clock()))
    assert await (await make()).load(value) is None


async def test_after_rotation_an_old_session_loads_stale(make: Make, clock: FakeClock) -> None:
    old, new = new_key(), new_key()
    _, value = await stored(await make(keys=(old,)), user_session(clock()))
    loaded = await (await make(keys=(new, old))).load(value)
    assert loaded is not None and loaded.stale and loaded.session.username == "alice"


async def test_a_stale_session_persisted_again_is_fresh_and_opens_under_the_new_secret_alone(
    make: Make, clock: FakeClock
) -> None:
    old, new = new_key(), new_key()
    _, value = await stored(await make(keys=(old,)), user_session(clock()))
    rotated = await make(keys=(new, old))
    loaded = await rotated.load(value)
    assert loaded is not None
    _, rewritten = await stored(rotated, loaded.session)
    reloaded = await (await make(keys=(new,))).load(rewritten)
    assert reloaded is not None and not reloaded.stale


async def test_dropping_the_old_secret_signs_out_the_sessions_still_under_it(make: Make, clock: FakeClock) -> None:
    old, new = new_key(), new_key()
    _, value = await stored(await make(keys=(old,)), user_session(clock()))
    assert await (await make(keys=(new,))).load(value) is None


async def test_reload_gives_the_latest_copy(make: Make, clock: FakeClock) -> None:
    backend = await make()
    persisted, _ = await stored(backend, user_session(clock()))
    refreshed = await backend.persist(dataclasses.replace(persisted, token_expires_at=persisted.token_expires_at + 99))
    latest = await backend.reload(refreshed)
    assert latest is not None and latest.token_expires_at == persisted.token_expires_at + 99


async def test_the_lock_can_be_taken_again_once_released(make: Make, clock: FakeClock) -> None:
    backend = await make()
    persisted, _ = await stored(backend, user_session(clock()))
    for _ in range(2):
        async with backend.lock(persisted):
            pass


async def test_a_working_backend_is_ready(make: Make) -> None:
    assert await (await make()).readiness() == "ok"


# The cookie backend only -----------------------------------------------------------------------------------------
async def test_the_cookie_backend_keeps_nothing_so_delete_cannot_revoke_a_copy(clock: FakeClock) -> None:
    """Documented in session_backends: a copy of a signed-out cookie works until refresh, idle or lifetime."""
    backend = CookieBackend(session_settings())
    persisted, value = await stored(backend, user_session(clock()))
    await backend.delete(persisted)
    assert await backend.load(value) is not None


async def test_a_fernet_cookie_of_an_earlier_release_loads_stale_so_it_is_rewritten(clock: FakeClock) -> None:
    settings = session_settings()
    backend = CookieBackend(settings)
    session = user_session(clock())
    legacy = legacy_fernet(settings.keys[0], SESSION_PURPOSE).encrypt(json.dumps(session.to_dict()).encode())
    loaded = await backend.load(legacy.decode().rstrip("="))  # as the cookie carried it: unpadded
    assert loaded is not None and loaded.stale and same(loaded.session, session)
    rewritten = await backend.load(backend.cookie_value(loaded.session))
    assert rewritten is not None and not rewritten.stale


async def test_a_fernet_copy_in_redis_loads_stale_and_is_stored_again_in_the_new_format(
    redis_server: RedisServer, clock: FakeClock
) -> None:
    redis_server.cli("FLUSHALL")
    settings = session_settings(store="redis", redis_url=redis_server.url)
    backend = RedisBackend(settings, clock)
    try:
        persisted, value = await stored(backend, user_session(clock()))
        [session_key] = redis_server.cli("KEYS", "*:session:*").split()
        legacy = legacy_fernet(settings.keys[0], SESSION_PURPOSE).encrypt(json.dumps(persisted.to_dict()).encode())
        redis_server.cli("SET", session_key, legacy.decode())
        loaded = await backend.load(value)
        assert loaded is not None and loaded.stale and same(loaded.session, persisted)
        await backend.persist(loaded.session)
        assert redis_server.cli("GET", session_key).startswith("Ag")
    finally:
        await backend.close()


# The Redis backend only ------------------------------------------------------------------------------------------
@pytest.fixture
async def redis_backend(redis_server: RedisServer, clock: FakeClock) -> AsyncIterator[RedisBackend]:
    redis_server.cli("FLUSHALL")
    backend = RedisBackend(session_settings(store="redis", redis_url=redis_server.url), clock)
    yield backend
    await backend.close()


async def test_redis_delete_ends_the_session_at_once(redis_backend: RedisBackend, clock: FakeClock) -> None:
    persisted, value = await stored(redis_backend, user_session(clock()))
    await redis_backend.delete(persisted)
    assert await redis_backend.load(value) is None
    assert await redis_backend.reload(persisted) is None


async def test_redis_gives_every_new_session_a_new_id(redis_backend: RedisBackend, clock: FakeClock) -> None:
    first, _ = await stored(redis_backend, user_session(clock()))
    second, _ = await stored(redis_backend, user_session(clock()))
    again, _ = await stored(redis_backend, first)
    assert first.session_id != second.session_id and again.session_id == first.session_id


async def test_redis_keeps_a_session_for_its_remaining_life_by_the_injected_clock(
    redis_backend: RedisBackend, redis_server: RedisServer, clock: FakeClock
) -> None:
    clock.advance(1000)  # by the wall clock, this session would have 1100 s left
    idle = session_settings().idle_timeout
    await redis_backend.persist(user_session(clock(), last_seen=int(clock()) - idle + 100))
    [key] = redis_server.cli("KEYS", "*:session:*").split()
    assert 95 <= int(redis_server.cli("TTL", key)) <= 100


async def test_redis_stores_only_ciphertext_under_the_ids_digest(
    redis_backend: RedisBackend, redis_server: RedisServer, clock: FakeClock
) -> None:
    _, value = await stored(redis_backend, user_session(clock()))
    keys = redis_server.cli("KEYS", "*").split()
    assert not any(value in key for key in keys), "a copy of the database yields no cookie"
    [session_key] = [k for k in keys if ":session:" in k]
    stored_value = redis_server.cli("GET", session_key)
    assert stored_value.startswith("Ag") and "alice" not in stored_value  # a sealed value (version byte 0x02)


async def test_a_tampered_value_in_redis_loads_as_no_session(
    redis_backend: RedisBackend, redis_server: RedisServer, clock: FakeClock
) -> None:
    _, value = await stored(redis_backend, user_session(clock()))
    [session_key] = [k for k in redis_server.cli("KEYS", "*:session:*").split()]
    redis_server.cli("SET", session_key, "gAAAAABtampered")
    assert await redis_backend.load(value) is None


async def test_redis_sessions_of_a_user_and_revoking_them_all(redis_backend: RedisBackend, clock: FakeClock) -> None:
    _, first = await stored(redis_backend, user_session(clock()))
    _, second = await stored(redis_backend, user_session(clock()))
    _, bobs = await stored(redis_backend, user_session(clock(), identity=identity(username="bob", sub="sub-bob")))
    assert len(await redis_backend.sessions_of("alice")) == 2
    assert await redis_backend.revoke_user("alice") == 2
    assert await redis_backend.load(first) is None and await redis_backend.load(second) is None
    assert await redis_backend.load(bobs) is not None


async def test_an_unreachable_redis_is_not_ready_and_loads_fail_closed(clock: FakeClock) -> None:
    backend = RedisBackend(session_settings(store="redis", redis_url=f"redis://127.0.0.1:{free_port()}/0"), clock)
    try:
        assert (await backend.readiness()).startswith("unreachable: ")
        with pytest.raises(StoreUnavailable):
            await backend.load("A" * 43)
        with pytest.raises(StoreUnavailable):
            await backend.persist(user_session(clock()))
    finally:
        await backend.close()
