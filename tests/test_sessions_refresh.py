"""Sessions that last: refresh with one token call per burst, refusal after a user is disabled, IdP blips, expiry
enforced by the server, and secret rotation. dev_idp issues 6-second tokens here and the gateway refreshes them in
their last 3 seconds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from gateway.config import Settings

from .cluster import Cluster
from .stack import HTML, SESSION_SECRET, alice_session, fill_form, forged_cookie, start_gateway
from .support import free_port, new_browser

TOKEN_TTL = 6


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    running = Cluster.start(tmp_path, replicas=1, token_ttl=TOKEN_TTL)
    yield running
    running.stop()


async def test_a_burst_on_an_expiring_session_makes_one_token_call(cluster: Cluster) -> None:
    cookies, issued = await cluster.sign_in()
    url = f"http://127.0.0.1:{cluster.ports[0]}/api/whoami"
    await asyncio.sleep(max(0, issued + TOKEN_TTL / 2 + 0.3 - time.time()))  # inside the refresh window
    before = (await cluster.token_requests()).get("refresh_token", 0)
    async with aiohttp.ClientSession(cookies=cookies, connector=aiohttp.TCPConnector(limit=0)) as client:

        async def one() -> tuple[int, list[str]]:
            async with client.get(url) as response:
                await response.read()
                return response.status, response.headers.getall("Set-Cookie", [])

        results = await asyncio.gather(*(one() for _ in range(30)))
    calls = (await cluster.token_requests()).get("refresh_token", 0) - before
    print(f"token-endpoint refresh calls for a 30-request burst: {calls}")
    assert [status for status, _ in results] == [200] * 30
    assert calls == 1
    assert all(any(c.startswith("_cognito_gateway=") for c in set_cookies) for _, set_cookies in results), (
        "every response of the burst carries the refreshed session"
    )


async def test_refreshed_cookie_reaches_the_browser_through_a_streamed_response(cluster: Cluster) -> None:
    cookies, issued = await cluster.sign_in()
    await asyncio.sleep(max(0, issued + TOKEN_TTL / 2 + 0.3 - time.time()))
    base = f"http://127.0.0.1:{cluster.ports[0]}"
    async with aiohttp.ClientSession(cookies=cookies, cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        async with browser.get(f"{base}/api/download", params={"size": "3000000"}) as response:
            assert response.status == 200 and "chunked" not in response.headers.get("Transfer-Encoding", "")
            assert any(c.startswith("_cognito_gateway=") for c in response.headers.getall("Set-Cookie"))
            assert len(await response.read()) == 3_000_000
        before = (await cluster.token_requests()).get("refresh_token", 0)
        async with browser.get(f"{base}/api/whoami") as response:
            assert response.status == 200
        assert (await cluster.token_requests()).get("refresh_token", 0) == before, "the new tokens were kept"


async def test_disabled_user_is_refused_within_one_token_lifetime(cluster: Cluster) -> None:
    cookies, _ = await cluster.sign_in()
    base = f"http://127.0.0.1:{cluster.ports[0]}"
    async with aiohttp.ClientSession(cookies=cookies) as client:
        async with client.get(f"{base}/api/whoami") as response:
            assert response.status == 200
        await cluster.set_enabled("alice", False)
        disabled_at = time.monotonic()
        while True:
            async with client.get(f"{base}/api/whoami") as response:
                if response.status != 200:
                    break
            assert time.monotonic() - disabled_at < TOKEN_TTL + 2, "still signed in after a token lifetime"
            await asyncio.sleep(0.1)
        elapsed = time.monotonic() - disabled_at
        print(f"disable -> first refused request: {elapsed:.1f} s (token lifetime {TOKEN_TTL} s)")
        assert response.status == 401
        seen_by_upstream = cluster.upstream.output().count("GET /api/whoami")
        assert seen_by_upstream >= 2, "upstream_demo logs each request it serves"
        for _ in range(3):
            async with client.get(f"{base}/api/whoami") as response:
                assert response.status == 401
        assert cluster.upstream.output().count("GET /api/whoami") == seen_by_upstream, "upstream never sees her again"
        async with client.get(f"{base}/", headers=HTML, allow_redirects=False) as response:
            assert response.status == 302 and "/oauth2/authorize" in response.headers["Location"]
    assert "refresh refused (invalid_grant)" in cluster.gateways[0].output()


async def test_an_idp_blip_signs_nobody_out(cluster: Cluster) -> None:
    cookies, issued = await cluster.sign_in()
    cluster.idp.process.stop()
    await asyncio.sleep(max(0, issued + TOKEN_TTL / 2 + 0.3 - time.time()))
    async with aiohttp.ClientSession(cookies=cookies) as client:
        for _ in range(3):
            async with client.get(f"http://127.0.0.1:{cluster.ports[0]}/api/whoami") as response:
                assert response.status == 200, "within GATEWAY_REFRESH_GRACE the session goes on"
    assert "keeping the session" in cluster.gateways[0].output()


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


async def test_sign_in_refresh_and_sign_out_in_a_browser_flow(cluster: Cluster) -> None:
    url = f"http://127.0.0.1:{cluster.ports[0]}"
    async with new_browser() as browser:
        # Through the gateway's own port: the balancer is not running in this test.
        async with browser.get(f"{url}/", headers=HTML) as page:
            back = await fill_form(browser, page, {"username": "alice", "password": "alice-password"}, follow=False)
        async with browser.get(back.headers["Location"].replace(cluster.public_url, url), allow_redirects=False):
            pass
        await asyncio.sleep(TOKEN_TTL / 2 + 0.3)
        async with browser.get(f"{url}/api/whoami") as response:
            assert response.status == 200
        async with browser.get(f"{url}/oauth2/sign_out", allow_redirects=False) as response:
            assert response.status == 302
        async with browser.get(f"{url}/api/whoami") as response:
            assert response.status == 401
