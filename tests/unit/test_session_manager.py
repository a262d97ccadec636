"""gateway.session_manager: when a session is refreshed, what ends it, what keeps it, and how its cookie reaches the
browser, with a fake clock and a stand-in for the OIDC client's ``refresh``."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from http.cookies import Morsel
from typing import cast

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from gateway.config import SessionSettings
from gateway.errors import IdpUnavailable, InvalidToken, SignInFailed, TokenRejected
from gateway.identity import Identity
from gateway.oidc import OidcClient, SignedIn
from gateway.session_backends import CookieBackend, SessionBackend
from gateway.session_manager import CLEAR, PENDING, SessionManager
from gateway.session_redis import RedisBackend
from gateway.user_session import UserSession

from ..cluster import RedisServer
from ..support import FakeClock
from .factories import (
    AUDIENCE,
    COOKIE,
    expired,
    identity,
    new_key,
    request,
    session_settings,
    set_cookies,
    user_session,
)

TOKEN_LIFETIME = 3600  # what the stand-in IdP gives a refreshed token
# Seconds (real ones) a test waits for a step of another task: a broken refresh then fails the test, never hangs it.
WAIT = 10


class FakeOidc:
    """Stands in for ``OidcClient.refresh``: counts calls, and answers (or raises) what the test sets."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.calls: list[tuple[str, str]] = []
        self.error: Exception | None = None
        self.identity: Identity | None = None  # None: the refresh says nothing new about the user
        self.refresh_token: str | None = None  # Cognito sends none on refresh
        self.called = asyncio.Event()  # set at the first call
        self.gate: asyncio.Event | None = None  # when set by a test, each call waits for it to open

    async def refresh(self, refresh_token: str, *, sub: str) -> SignedIn:
        self.calls.append((refresh_token, sub))
        self.called.set()
        if self.gate is not None:
            await self.gate.wait()
        # A round trip to the IdP: other requests of a burst run meanwhile.
        for _ in range(3):
            await asyncio.sleep(0)
        if self.error is not None:
            raise self.error
        now = int(self.clock())
        return SignedIn(self.identity, now + TOKEN_LIFETIME, now, self.refresh_token)


@pytest.fixture
def idp(clock: FakeClock) -> FakeOidc:
    return FakeOidc(clock)


def manager_for(
    idp: FakeOidc, clock: FakeClock, settings: SessionSettings, backend: SessionBackend | None = None
) -> SessionManager:
    backend = backend or CookieBackend(settings)
    return SessionManager(backend, settings, oidc=cast(OidcClient, idp), audience=AUDIENCE, clock=clock)


@pytest.fixture
def settings() -> SessionSettings:
    return session_settings(refresh_before=300, refresh_grace=600, idle_timeout=2 * 3600, lifetime=12 * 3600)


@pytest.fixture
def manager(idp: FakeOidc, clock: FakeClock, settings: SessionSettings) -> SessionManager:
    return manager_for(idp, clock, settings)


async def cookies_of(manager: SessionManager, session: UserSession) -> dict[str, str]:
    """The browser's cookies for ``session``, as the gateway would write them."""
    response = web.Response()
    value = manager.backend.cookie_value(await manager.backend.persist(session))
    manager.cookies.write(request(), response, value, max_age=3600)
    return {name: morsel.value for name, morsel in set_cookies(response).items()}


async def answered(manager: SessionManager, req: web.Request) -> dict[str, Morsel[str]]:
    """The cookies the response to ``req`` sets (``write_cookies`` is what runs as its headers go out)."""
    response = web.Response()
    await manager.write_cookies(req, response)
    return set_cookies(response)


async def rewritten(manager: SessionManager, req: web.Request) -> dict[str, str]:
    """The cookie values the response to ``req`` sets."""
    return {name: morsel.value for name, morsel in (await answered(manager, req)).items()}


async def browse(
    manager: SessionManager, clock: FakeClock, browser: dict[str, str], *, every: int, times: int
) -> dict[str, str]:
    """A request every ``every`` seconds, ``times`` times, each one signed in; returns the browser's cookies after."""
    for _ in range(times):
        clock.advance(every)
        req = request(cookies=browser)
        assert await manager.current(req) is not None
        browser = browser | await rewritten(manager, req)
    return browser


async def loaded(manager: SessionManager, cookies: dict[str, str]) -> UserSession | None:
    found = await manager.backend.load(manager.cookies.read(request(cookies=cookies)) or "")
    return found.session if found is not None else None


# Refresh: when due, and only then --------------------------------------------------------------------------------
async def test_a_session_is_not_refreshed_before_the_refresh_window(
    manager: SessionManager, idp: FakeOidc, clock: FakeClock
) -> None:
    session = user_session(clock())
    browser = await cookies_of(manager, session)
    clock.advance(TOKEN_LIFETIME - 300 - 1)
    current = await manager.current(request(cookies=browser))
    assert current is not None and current.token_expires_at == session.token_expires_at
    assert idp.calls == []


async def test_a_session_in_the_refresh_window_is_refreshed(
    manager: SessionManager, idp: FakeOidc, clock: FakeClock
) -> None:
    session = user_session(clock())
    browser = await cookies_of(manager, session)
    clock.advance(TOKEN_LIFETIME - 300)
    current = await manager.current(request(cookies=browser))
    assert idp.calls == [("refresh-token-of-alice", "sub-alice")]
    assert current is not None and current.token_expires_at == int(clock()) + TOKEN_LIFETIME


async def test_the_refreshed_session_goes_to_the_browser(manager: SessionManager, clock: FakeClock) -> None:
    browser = await cookies_of(manager, user_session(clock()))
    clock.advance(TOKEN_LIFETIME)
    req = request(cookies=browser)
    await manager.current(req)
    session = await loaded(manager, await rewritten(manager, req))
    assert session is not None and session.token_expires_at == int(clock()) + TOKEN_LIFETIME


async def test_a_refreshed_session_is_not_refreshed_again(
    manager: SessionManager, idp: FakeOidc, clock: FakeClock
) -> None:
    browser = await cookies_of(manager, user_session(clock()))
    clock.advance(TOKEN_LIFETIME)
    req = request(cookies=browser)
    await manager.current(req)
    browser = await rewritten(manager, req)
    clock.advance(60)
    await manager.current(request(cookies=browser))
    assert len(idp.calls) == 1


async def test_a_burst_of_requests_makes_one_refresh_call(
    manager: SessionManager, idp: FakeOidc, clock: FakeClock
) -> None:
    browser = await cookies_of(manager, user_session(clock()))
    clock.advance(TOKEN_LIFETIME - 100)
    requests = [request(cookies=browser) for _ in range(30)]
    sessions = await asyncio.gather(*(manager.current(r) for r in requests))
    assert len(idp.calls) == 1
    assert {s.token_expires_at for s in sessions if s is not None} == {int(clock()) + TOKEN_LIFETIME}
    assert all(isinstance(r.get(PENDING), UserSession) for r in requests), "every response carries the new cookie"


async def test_a_late_request_with_the_old_cookie_gets_the_refreshed_session_without_a_call(
    manager: SessionManager, idp: FakeOidc, clock: FakeClock
) -> None:
    browser = await cookies_of(manager, user_session(clock()))
    clock.advance(TOKEN_LIFETIME - 100)
    await manager.current(request(cookies=browser))
    clock.advance(5)
    late = request(cookies=browser)
    session = await manager.current(late)
    assert len(idp.calls) == 1
    assert session is not None and session.token_expires_at == int(clock()) - 5 + TOKEN_LIFETIME
    assert isinstance(late.get(PENDING), UserSession)


async def test_a_refresh_takes_the_idps_new_claims_and_keeps_the_refresh_token(
    manager: SessionManager, idp: FakeOidc, clock: FakeClock
) -> None:
    browser = await cookies_of(manager, user_session(clock()))
    idp.identity = identity(groups=("admins", "ops"))
    clock.advance(TOKEN_LIFETIME)
    session = await manager.current(request(cookies=browser))
    assert session is not None and session.identity.groups == ("admins", "ops")
    assert session.refresh_token == "refresh-token-of-alice", "Cognito sends no new refresh token"


async def test_a_rotated_refresh_token_is_kept(manager: SessionManager, idp: FakeOidc, clock: FakeClock) -> None:
    browser = await cookies_of(manager, user_session(clock()))
    idp.refresh_token = "rotated-refresh-token"
    clock.advance(TOKEN_LIFETIME)
    session = await manager.current(request(cookies=browser))
    assert session is not None and session.refresh_token == "rotated-refresh-token"


async def test_the_lifetime_counts_from_sign_in_not_from_the_refresh(manager: SessionManager, clock: FakeClock) -> None:
    signed_in = user_session(clock())
    browser = await cookies_of(manager, signed_in)
    clock.advance(TOKEN_LIFETIME)
    session = await manager.current(request(cookies=browser))
    assert session is not None and session.created_at == signed_in.created_at


# What ends a session, and what does not ------------------------------------------------------------------------
@pytest.mark.parametrize("error", ["invalid_grant", "invalid_client"])
async def test_a_refused_refresh_ends_the_session_and_clears_the_cookie(
    manager: SessionManager, idp: FakeOidc, clock: FakeClock, error: str
) -> None:
    browser = await cookies_of(manager, user_session(clock()))
    idp.error = TokenRejected(error)
    clock.advance(TOKEN_LIFETIME - 100)
    req = request(cookies=browser)
    assert await manager.current(req) is None
    assert req[PENDING] is CLEAR
    assert expired((await answered(manager, req))[COOKIE])


async def test_refreshed_tokens_that_fail_verification_end_the_session(
    manager: SessionManager, idp: FakeOidc, clock: FakeClock
) -> None:
    browser = await cookies_of(manager, user_session(clock()))
    idp.error = InvalidToken("refreshed ID token is for another subject")
    clock.advance(TOKEN_LIFETIME - 100)
    req = request(cookies=browser)
    assert await manager.current(req) is None and req[PENDING] is CLEAR


TRANSIENT_ERRORS = [IdpUnavailable(), TokenRejected("temporarily_unavailable"), TokenRejected("invalid_request")]


@pytest.mark.parametrize("error", TRANSIENT_ERRORS, ids=lambda e: getattr(e, "error", type(e).__name__))
async def test_a_transient_idp_error_keeps_the_session_until_the_grace_ends(
    manager: SessionManager, idp: FakeOidc, clock: FakeClock, error: Exception
) -> None:
    session = user_session(clock())
    browser = await cookies_of(manager, session)
    idp.error = error
    clock.advance(TOKEN_LIFETIME + 600 - 1)  # tokens expired, one second of GATEWAY_REFRESH_GRACE left
    req = request(cookies=browser)
    kept = await manager.current(req)
    assert kept is not None and kept.token_expires_at == session.token_expires_at
    assert req.get(PENDING) is not CLEAR
    assert len(idp.calls) == 1, "and it was tried"


@pytest.mark.parametrize("error", TRANSIENT_ERRORS, ids=lambda e: getattr(e, "error", type(e).__name__))
async def test_a_transient_idp_error_ends_the_session_after_the_grace(
    manager: SessionManager, idp: FakeOidc, clock: FakeClock, error: Exception
) -> None:
    browser = await cookies_of(manager, user_session(clock()))
    idp.error = error
    clock.advance(TOKEN_LIFETIME + 600)
    assert await manager.current(request(cookies=browser)) is None


async def test_during_an_outage_every_request_tries_again(
    manager: SessionManager, idp: FakeOidc, clock: FakeClock
) -> None:
    browser = await cookies_of(manager, user_session(clock()))
    idp.error = IdpUnavailable()
    clock.advance(TOKEN_LIFETIME - 100)
    await manager.current(request(cookies=browser))
    idp.error = None
    clock.advance(10)
    session = await manager.current(request(cookies=browser))
    assert len(idp.calls) == 2 and session is not None and session.token_expires_at == int(clock()) + TOKEN_LIFETIME


# Expiry enforced by the server -------------------------------------------------------------------------------------
async def test_a_replayed_cookie_is_refused_after_the_idle_timeout(idp: FakeOidc, clock: FakeClock) -> None:
    manager = manager_for(idp, clock, session_settings(idle_timeout=600))
    browser = await cookies_of(manager, user_session(clock()))
    clock.advance(599)
    assert await manager.current(request(cookies=browser)) is not None
    clock.advance(1)
    assert await manager.current(request(cookies=browser)) is None


async def test_activity_keeps_a_session_past_the_idle_timeout(idp: FakeOidc, clock: FakeClock) -> None:
    manager = manager_for(idp, clock, session_settings(idle_timeout=600))
    browser = await cookies_of(manager, user_session(clock()))
    await browse(manager, clock, browser, every=500, times=4)


async def test_the_absolute_lifetime_refuses_even_a_busy_session(idp: FakeOidc, clock: FakeClock) -> None:
    manager = manager_for(idp, clock, session_settings(lifetime=3600, idle_timeout=600))
    browser = await cookies_of(manager, user_session(clock()))
    browser = await browse(manager, clock, browser, every=500, times=7)
    clock.advance(100)  # 3600 s after sign-in, last seen 100 s ago
    assert await manager.current(request(cookies=browser)) is None


# Idle tracking -----------------------------------------------------------------------------------------------------
async def test_last_seen_is_not_rewritten_within_the_touch_interval(
    manager: SessionManager, settings: SessionSettings, clock: FakeClock
) -> None:
    browser = await cookies_of(manager, user_session(clock()))
    clock.advance(settings.touch_interval - 1)
    req = request(cookies=browser)
    await manager.current(req)
    assert PENDING not in req and await answered(manager, req) == {}


async def test_last_seen_is_rewritten_once_the_touch_interval_has_passed(
    manager: SessionManager, settings: SessionSettings, clock: FakeClock
) -> None:
    browser = await cookies_of(manager, user_session(clock()))
    clock.advance(settings.touch_interval)
    req = request(cookies=browser)
    await manager.current(req)
    session = await loaded(manager, await rewritten(manager, req))
    assert session is not None and session.last_seen == int(clock())


# Rotation ----------------------------------------------------------------------------------------------------------
async def test_a_session_read_under_an_old_secret_is_rewritten_under_the_first(idp: FakeOidc, clock: FakeClock) -> None:
    old, new = new_key(), new_key()
    browser = await cookies_of(manager_for(idp, clock, session_settings(keys=(old,))), user_session(clock()))
    rotated = manager_for(idp, clock, session_settings(keys=(new, old)))
    req = request(cookies=browser)
    assert await rotated.current(req) is not None
    new_only = manager_for(idp, clock, session_settings(keys=(new,)))
    assert await loaded(new_only, await rewritten(rotated, req)) is not None


async def test_a_session_under_the_first_secret_is_not_rewritten(idp: FakeOidc, clock: FakeClock) -> None:
    old, new = new_key(), new_key()
    rotated = manager_for(idp, clock, session_settings(keys=(new, old)))
    req = request(cookies=await cookies_of(rotated, user_session(clock())))
    await rotated.current(req)
    assert PENDING not in req


# Sign-in, sign-out, and the cookie on a streamed response ----------------------------------------------------------
async def test_sign_in_starts_a_new_session_written_with_the_response(
    manager: SessionManager, settings: SessionSettings, clock: FakeClock
) -> None:
    req = request()
    signed_in = SignedIn(identity(), int(clock()) + TOKEN_LIFETIME, int(clock()) - 5, "refresh-token")
    session = await manager.start(req, signed_in)
    assert (session.created_at, session.last_seen, session.auth_time) == (int(clock()), int(clock()), int(clock()) - 5)
    cookie = (await answered(manager, req))[COOKIE]
    assert cookie["max-age"] == str(settings.lifetime)
    assert await loaded(manager, {COOKIE: cookie.value}) == session


MANY_GROUPS = tuple(f"team-{i:04d}-engineering-with-a-long-name" for i in range(400))  # beyond two cookies


async def test_a_sign_in_too_large_for_cookies_gets_the_use_redis_answer(
    manager: SessionManager, clock: FakeClock
) -> None:
    req = request()
    signed_in = SignedIn(identity(groups=MANY_GROUPS), int(clock()) + TOKEN_LIFETIME, int(clock()), "refresh-token")
    with pytest.raises(SignInFailed) as refused:
        await manager.start(req, signed_in)
    assert refused.value.code == "session_too_large" and PENDING not in req


async def test_a_refresh_that_grows_the_session_beyond_cookies_ends_it_with_the_use_redis_answer(
    manager: SessionManager, idp: FakeOidc, clock: FakeClock
) -> None:
    browser = await cookies_of(manager, user_session(clock()))
    idp.identity = identity(groups=MANY_GROUPS)
    clock.advance(TOKEN_LIFETIME)
    req = request(cookies=browser)
    with pytest.raises(SignInFailed) as refused:
        await manager.current(req)
    assert refused.value.code == "session_too_large"
    assert req[PENDING] is CLEAR and expired((await answered(manager, req))[COOKIE]), "no cookie it cannot hold"


async def test_sign_out_clears_the_cookie(manager: SessionManager, clock: FakeClock) -> None:
    req = request(cookies=await cookies_of(manager, user_session(clock())))
    ended = await manager.end(req)
    assert ended is not None and ended.username == "alice"
    assert expired((await answered(manager, req))[COOKIE])


async def test_no_cookie_means_no_session_and_no_cookie_written(manager: SessionManager) -> None:
    req = request()
    assert await manager.current(req) is None
    assert await answered(manager, req) == {}


async def test_a_refreshed_cookie_goes_out_with_a_streamed_responses_headers(
    manager: SessionManager, clock: FakeClock
) -> None:
    """The proxy streams: the cookie must be in the headers ``prepare()`` sends, before any body byte."""
    app = web.Application()
    app.on_response_prepare.append(manager.write_cookies)
    app.freeze()
    browser = await cookies_of(manager, user_session(clock()))
    cookie_header = "; ".join(f"{k}={v}" for k, v in browser.items())
    req = make_mocked_request("GET", "/api/download", headers={"Cookie": cookie_header}, app=app)
    clock.advance(TOKEN_LIFETIME)
    await manager.current(req)

    response = web.StreamResponse()
    response.content_length = 3
    await response.prepare(req)
    await response.write(b"abc")
    sent_headers = req._payload_writer.write_headers.call_args.args[1]  # what went on the wire
    [set_cookie] = [v for k, v in sent_headers.items() if k.lower() == "set-cookie"]
    session = await loaded(manager, {COOKIE: set_cookie.split(";")[0].split("=", 1)[1]})
    assert session is not None and session.token_expires_at == int(clock()) + TOKEN_LIFETIME


# Across replicas, with the Redis backend ---------------------------------------------------------------------------
class WatchedRedisBackend(RedisBackend):
    """A RedisBackend that says when a refresh asks for its lock."""

    def __init__(self, settings: SessionSettings, clock: FakeClock) -> None:
        super().__init__(settings, clock)
        self.lock_asked = asyncio.Event()

    def lock(self, session: UserSession) -> AbstractAsyncContextManager[None]:
        self.lock_asked.set()
        return super().lock(session)


@pytest.fixture
async def redis_managers(
    redis_server: RedisServer, idp: FakeOidc, clock: FakeClock
) -> AsyncIterator[tuple[SessionManager, SessionManager]]:
    """Two replicas: two managers with their own Redis clients on one server, one secret, one IdP."""
    redis_server.cli("FLUSHALL")
    settings = session_settings(store="redis", redis_url=redis_server.url)
    first, second = (manager_for(idp, clock, settings, WatchedRedisBackend(settings, clock)) for _ in range(2))
    yield first, second
    for replica in (first, second):
        await replica.backend.close()


async def test_a_replica_waits_for_another_replicas_refresh_and_uses_it(
    redis_managers: tuple[SessionManager, SessionManager], idp: FakeOidc, clock: FakeClock
) -> None:
    first, second = redis_managers
    browser = await cookies_of(first, user_session(clock()))
    clock.advance(TOKEN_LIFETIME - 100)
    idp.gate = asyncio.Event()
    refreshing = asyncio.ensure_future(first.current(request(cookies=browser)))
    await asyncio.wait_for(idp.called.wait(), WAIT)  # the first replica holds the lock and is at the IdP
    waiting = asyncio.ensure_future(second.current(request(cookies=browser)))
    watched = second.backend
    assert isinstance(watched, WatchedRedisBackend)
    await asyncio.wait_for(watched.lock_asked.wait(), WAIT)  # the second loaded the old session, due, too
    idp.gate.set()
    sessions = await asyncio.wait_for(asyncio.gather(refreshing, waiting), WAIT)
    assert len(idp.calls) == 1, "the Redis lock, then a reload: the second replica finds the refreshed session"
    assert {s.token_expires_at for s in sessions if s is not None} == {int(clock()) + TOKEN_LIFETIME}


async def test_with_redis_a_refused_refresh_ends_the_session_for_every_replica(
    redis_managers: tuple[SessionManager, SessionManager], idp: FakeOidc, clock: FakeClock
) -> None:
    first, second = redis_managers
    browser = await cookies_of(first, user_session(clock()))
    idp.error = TokenRejected("invalid_grant")
    clock.advance(TOKEN_LIFETIME - 100)
    assert await first.current(request(cookies=browser)) is None
    idp.error = None
    assert await second.current(request(cookies=browser)) is None
    assert len(idp.calls) == 1


async def test_with_redis_sign_out_ends_the_session_on_every_replica(
    redis_managers: tuple[SessionManager, SessionManager], clock: FakeClock
) -> None:
    first, second = redis_managers
    browser = await cookies_of(first, user_session(clock()))
    await first.end(request(cookies=browser))
    assert await second.current(request(cookies=browser)) is None


def test_the_stand_in_has_the_signature_of_the_real_refresh() -> None:
    """If OidcClient.refresh changes shape, these tests must change with it."""
    assert inspect.signature(FakeOidc.refresh) == inspect.signature(OidcClient.refresh)


async def test_a_session_bound_to_another_issuer_or_client_is_no_session(
    manager: SessionManager, clock: FakeClock
) -> None:
    """A sibling deployment that shares the secret but not the client cannot mint sessions for this one."""
    for audience in ("https://idp.example/pool another-client", "https://other.example/pool gateway", ""):
        session = user_session(clock(), audience=audience)
        cookie = manager.backend.cookie_value(session)
        assert await manager.current(request(cookies={COOKIE: cookie})) is None, audience
    good = manager.backend.cookie_value(user_session(clock()))
    assert await manager.current(request(cookies={COOKIE: good})) is not None
