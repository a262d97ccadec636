"""Sessions that last: refresh with one token call per burst, the refreshed cookie through a streamed response,
refusal after a user is disabled, IdP blips, expiry enforced by the server, and secret rotation.

The refresh tests run the gateway, dev_idp and an upstream in this process (``in_process``) on one FakeClock, so
a session reaches its refresh window with ``clock.advance`` instead of a sleep; dev_idp's tokens live an hour and
the gateway refreshes them in their last GATEWAY_REFRESH_BEFORE (5 minutes). The expiry and rotation tests at the
end forge cookies for the real processes of the shared stack. (The session manager's rules one by one are in
tests/unit/test_session_manager.py; several replicas behind a balancer in tests/test_replicas.py.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from dev_idp.keys import PoolKeys
from gateway.config import Settings

from .in_process import InProcessGateway, in_process_gateway
from .stack import HTML, SESSION_SECRET, alice_session, browse_and_sign_in, forged_cookie, start_gateway
from .support import free_port, new_browser

TOKEN_TTL = 3600  # dev_idp's default access and ID token lifetime
INTO_THE_WINDOW = TOKEN_TTL - 300  # seconds after sign-in when the session is due for a refresh


@pytest.fixture
async def gateway(pool_keys: PoolKeys) -> AsyncIterator[InProcessGateway]:
    async with in_process_gateway(pool_keys) as running:
        yield running


async def signed_in(gateway: InProcessGateway, browser: aiohttp.ClientSession) -> dict[str, str]:
    """Sign alice in through the hosted UI; returns the gateway's cookies (the session)."""
    landed = await browse_and_sign_in(browser, f"{gateway.url}/")
    assert landed.status == 200 and await landed.text() == "hello alice"
    return {c.key: c.value for c in browser.cookie_jar if c.key.startswith("_cognito_gateway")}


def session_cookie_set(response: aiohttp.ClientResponse) -> bool:
    return any(c.startswith("_cognito_gateway=") for c in response.headers.getall("Set-Cookie", []))


async def test_a_burst_on_an_expiring_session_makes_one_token_call(gateway: InProcessGateway) -> None:
    async with new_browser() as browser:
        cookies = await signed_in(gateway, browser)
    gateway.clock.advance(INTO_THE_WINDOW)
    before = gateway.token_requests()
    async with aiohttp.ClientSession(cookies=cookies, connector=aiohttp.TCPConnector(limit=0)) as client:

        async def one() -> tuple[int, bool]:
            async with client.get(f"{gateway.url}/api/whoami") as response:
                await response.read()
                return response.status, session_cookie_set(response)

        results = await asyncio.gather(*(one() for _ in range(30)))
    assert [status for status, _ in results] == [200] * 30
    assert gateway.token_requests() - before == 1
    assert all(rewritten for _, rewritten in results), "every response of the burst carries the refreshed session"


async def test_refreshed_cookie_reaches_the_browser_through_a_streamed_response(gateway: InProcessGateway) -> None:
    async with new_browser() as browser:
        await signed_in(gateway, browser)
        gateway.clock.advance(INTO_THE_WINDOW)
        before = gateway.token_requests()
        async with browser.get(f"{gateway.url}/api/download", params={"size": "3000000"}) as response:
            assert response.status == 200 and "chunked" not in response.headers.get("Transfer-Encoding", "")
            assert response.content_length == 3_000_000, "streamed through with the upstream's Content-Length"
            assert session_cookie_set(response)
            assert len(await response.read()) == 3_000_000
        assert gateway.token_requests() - before == 1
        gateway.clock.advance(60)
        async with browser.get(f"{gateway.url}/api/whoami") as response:
            assert response.status == 200
        assert gateway.token_requests() - before == 1, "the browser kept the new tokens: no second refresh"


async def test_disabled_user_is_refused_within_one_token_lifetime(
    gateway: InProcessGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway")
    async with new_browser() as browser:
        await signed_in(gateway, browser)
        await gateway.set_enabled("alice", False)
        # Cookie sessions cannot be revoked: until the refresh window her tokens still stand.
        gateway.clock.advance(INTO_THE_WINDOW - 1)
        async with browser.get(f"{gateway.url}/api/whoami") as response:
            assert response.status == 200
        seen_by_upstream = len(gateway.upstream.seen)
        gateway.clock.advance(1)  # the refresh is due, and refused: well within the token lifetime
        async with browser.get(f"{gateway.url}/api/whoami") as response:
            assert response.status == 401
        for _ in range(3):
            async with browser.get(f"{gateway.url}/api/whoami") as response:
                assert response.status == 401
        assert len(gateway.upstream.seen) == seen_by_upstream, "the upstream never sees her again"
        async with browser.get(f"{gateway.url}/", headers=HTML, allow_redirects=False) as response:
            assert response.status == 302 and "/oauth2/authorize" in response.headers["Location"]
    assert "refresh refused (invalid_grant)" in caplog.text


async def test_an_idp_blip_signs_nobody_out(gateway: InProcessGateway, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="gateway")
    async with new_browser() as browser:
        await signed_in(gateway, browser)
        await gateway.stop_idp()
        gateway.clock.advance(INTO_THE_WINDOW)
        for _ in range(3):
            async with browser.get(f"{gateway.url}/api/whoami") as response:
                assert response.status == 200, "within GATEWAY_REFRESH_GRACE the session goes on"
        assert "the IdP is unreachable; keeping the session" in caplog.text
        grace = gateway.settings.session.refresh_grace
        gateway.clock.advance(TOKEN_TTL - INTO_THE_WINDOW + grace)
        async with browser.get(f"{gateway.url}/api/whoami") as response:
            assert response.status == 401, "past the grace, tokens nobody could refresh end the session"


async def test_sign_in_refresh_and_sign_out_in_a_browser_flow(gateway: InProcessGateway) -> None:
    async with new_browser() as browser:
        await signed_in(gateway, browser)
        gateway.clock.advance(INTO_THE_WINDOW)
        before = gateway.token_requests()
        async with browser.get(f"{gateway.url}/api/whoami") as response:
            assert response.status == 200
            assert session_cookie_set(response), "the refreshed session is written back"
        assert gateway.token_requests() - before == 1, "this request refreshed the tokens"
        async with browser.get(f"{gateway.url}/oauth2/sign_out", allow_redirects=False) as response:
            assert response.status == 302
        async with browser.get(f"{gateway.url}/api/whoami") as response:
            assert response.status == 401


# Expiry and rotation on the shared stack ------------------------------------------------------------------------
async def _status(url: str, cookies: dict[str, str]) -> tuple[int, list[str]]:
    async with aiohttp.ClientSession(cookies=cookies) as client, client.get(f"{url}/api/whoami") as response:
        return response.status, response.headers.getall("Set-Cookie", [])


async def test_a_replayed_cookie_idle_too_long_is_refused(stack) -> None:  # type: ignore[no-untyped-def]
    idle = Settings.from_env(stack.env).session.idle_timeout
    now = time.time()
    assert (await _status(stack.url, forged_cookie(stack.env, alice_session(created=now - 60, seen=now - 30))))[
        0
    ] == 200
    # A cookie that is itself still valid (a later gateway with a longer idle timeout wrote it)...
    replayed = forged_cookie(
        stack.env, alice_session(created=now - 60, seen=now - idle - 5), GATEWAY_SESSION_IDLE_TIMEOUT="48h"
    )
    assert (await _status(stack.url, replayed))[0] == 401, "...is refused by the server after the idle timeout"


async def test_rotating_the_secret_signs_nobody_out_and_rewrites_old_sessions(stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    new_secret = "k6Xc0o7gq2dJ3bq8Yl0m4Sx5Tq9Wv2Zr1Hu6Ne3Pa7M="
    now = time.time()
    old_cookie = forged_cookie(stack.env, alice_session(created=now - 60, seen=now - 30))
    port = free_port()
    rotated = start_gateway(
        {**stack.env, "GATEWAY_LISTEN": f"127.0.0.1:{port}", "GATEWAY_SESSION_SECRET": f"{new_secret},{SESSION_SECRET}"}
    )
    only_new_port = free_port()
    only_new = start_gateway(
        {**stack.env, "GATEWAY_LISTEN": f"127.0.0.1:{only_new_port}", "GATEWAY_SESSION_SECRET": new_secret}
    )
    try:
        status, set_cookies = await _status(f"http://127.0.0.1:{port}", old_cookie)
        assert status == 200, "rotation signs nobody out"
        rewritten = {c.split("=", 1)[0]: c.split("=", 1)[1].split(";", 1)[0] for c in set_cookies}
        assert "_cognito_gateway" in rewritten, "a session read with the old key is rewritten with the first"
        assert (await _status(f"http://127.0.0.1:{only_new_port}", rewritten))[0] == 200
        assert (await _status(f"http://127.0.0.1:{only_new_port}", old_cookie))[0] == 401, (
            "removing the old key signs out exactly the sessions still under it"
        )
    finally:
        rotated.stop()
        only_new.stop()
