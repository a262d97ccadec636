"""Proxying: requests and responses pass as they are, bodies stream, and failures of the upstream get 502/504."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from upstream_demo.app import _PATTERN

from .stack import HTML, Stack, browse_and_sign_in, start_gateway
from .support import CapturedProcess, free_port, new_browser

GIB = 1024**3


@pytest.fixture
async def alice(stack: Stack) -> AsyncIterator[aiohttp.ClientSession]:
    async with new_browser() as browser:
        await browse_and_sign_in(browser, f"{stack.url}/")
        yield browser


async def echo(browser: aiohttp.ClientSession, method: str, url: URL, **kwargs: object) -> dict:
    async with browser.request(method, url, allow_redirects=False, **kwargs) as response:
        assert response.status == 200, await response.text()
        return await response.json()


@pytest.mark.parametrize(
    "target",
    ["/api/echo/a/../b", "/api/echo/a%2Fb", "/api/echo/%2e%2e/x", "/api/echo/x?q=1&q=2&empty=&plus=a+b&pct=%2F%3F"],
)
async def test_method_path_and_query_are_forwarded_byte_for_byte(
    stack: Stack, alice: aiohttp.ClientSession, target: str
) -> None:
    body = await echo(alice, "PATCH", URL(f"{stack.url}{target}", encoded=True), data=b"{}")
    assert body["method"] == "PATCH"
    assert body["raw_uri"] == target


async def test_upstream_redirects_and_set_cookies_pass_back_untouched(
    stack: Stack, alice: aiohttp.ClientSession
) -> None:
    async with alice.get(f"{stack.url}/api/redirect", allow_redirects=False) as response:
        assert response.status == 302
        assert response.headers["Location"] == "/somewhere-else"
        cookies = response.headers.getall("Set-Cookie")
    assert any(c.startswith("app_cookie=one") for c in cookies) and any(c.startswith("app_other=two") for c in cookies)


async def test_upstream_cookies_are_not_shared_between_users(stack: Stack, alice: aiohttp.ClientSession) -> None:
    await (await alice.get(f"{stack.url}/api/redirect", allow_redirects=False)).read()
    async with new_browser() as bob:
        await browse_and_sign_in(bob, f"{stack.url}/", "bob", "bob-password")
        received = dict((await echo(bob, "GET", URL(f"{stack.url}/api/whoami")))["headers"])
    assert "app_cookie" not in received.get("Cookie", "")


async def test_compressed_bodies_are_not_decompressed(stack: Stack, alice: aiohttp.ClientSession) -> None:
    async with aiohttp.ClientSession(cookie_jar=alice.cookie_jar, auto_decompress=False) as raw:
        async with raw.get(f"{stack.url}/api/gzip", headers={"Accept-Encoding": "gzip"}) as response:
            assert response.headers["Content-Encoding"] == "gzip"
            body = await response.read()
    assert gzip.decompress(body) == b"compressed hello " * 100


async def test_no_headers_of_the_proxys_own_are_added(stack: Stack, alice: aiohttp.ClientSession) -> None:
    async with aiohttp.ClientSession(
        cookie_jar=alice.cookie_jar, skip_auto_headers=("User-Agent", "Accept-Encoding")
    ) as raw:
        received = {k.lower() for k, _ in (await echo(raw, "GET", URL(f"{stack.url}/api/whoami")))["headers"]}
    assert "user-agent" not in received and "accept-encoding" not in received


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


class RssSampler:
    """Samples a process's resident memory every 50 ms, in a thread, while a transfer runs."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self.baseline = pid, 0, _rss_kib(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, _rss_kib(self.pid))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.baseline) / 1024


async def test_one_gib_up_and_down_with_bounded_memory(stack: Stack, alice: aiohttp.ClientSession) -> None:
    chunk = _PATTERN * 16  # 1 MiB
    expected = hashlib.sha256()
    for _ in range(GIB // len(chunk)):
        expected.update(chunk)

    async def body() -> AsyncIterator[bytes]:
        for _ in range(GIB // len(chunk)):
            yield chunk

    with RssSampler(stack.gateway.proc.pid) as upload:
        result = await echo(alice, "POST", URL(f"{stack.url}/api/upload"), data=body())
    assert result == {"size": GIB, "sha256": expected.hexdigest()}

    with RssSampler(stack.gateway.proc.pid) as download:
        received, digest = 0, hashlib.sha256()
        async with alice.get(f"{stack.url}/api/download", params={"size": str(GIB)}) as response:
            assert response.status == 200 and response.headers["Content-Length"] == str(GIB)
            async for piece in response.content.iter_chunked(1024 * 1024):
                received += len(piece)
                digest.update(piece)
    assert received == GIB and digest.hexdigest() == expected.hexdigest()
    print(f"gateway RSS growth: upload {upload.growth_mib:.1f} MiB, download {download.growth_mib:.1f} MiB")
    assert upload.growth_mib < 64, upload.growth_mib
    assert download.growth_mib < 64, download.growth_mib


@pytest.fixture
def lonely_gateway(stack: Stack) -> Iterator[tuple[CapturedProcess, str, int]]:
    """A second gateway on the same IdP whose upstream port has nothing listening yet."""
    upstream_port = free_port()
    port = free_port()
    env = {
        **stack.env,
        "GATEWAY_UPSTREAM": f"http://127.0.0.1:{upstream_port}",
        "GATEWAY_LISTEN": f"127.0.0.1:{port}",
        "GATEWAY_UPSTREAM_TIMEOUT": "1s",
    }
    gateway = start_gateway(env)
    yield gateway, f"http://127.0.0.1:{port}", upstream_port
    gateway.stop()


async def _copy_session(stack: Stack, browser: aiohttp.ClientSession) -> dict[str, str]:
    await browse_and_sign_in(browser, f"{stack.url}/")
    # Same secret and cookie name: the session works on any gateway of the deployment.
    return {c.key: c.value for c in browser.cookie_jar if c.key.startswith("_cognito_gateway")}


async def test_upstream_down_gives_502_and_recovers(stack: Stack, lonely_gateway) -> None:
    _, url, upstream_port = lonely_gateway
    async with new_browser() as browser:
        cookies = await _copy_session(stack, browser)
    async with aiohttp.ClientSession(cookies=cookies) as client:
        async with client.get(f"{url}/", headers=HTML) as response:
            assert response.status == 502
            assert "not reachable" in await response.text()
        async with client.get(f"{url}/api/whoami", headers={"Accept": "application/json"}) as response:
            assert response.status == 502 and (await response.json())["error"] == "upstream_unavailable"
        async with client.get(f"{url}/oauth2/readyz") as response:
            assert response.status == 503 and "unreachable" in (await response.json())["checks"]["upstream"]
        upstream = CapturedProcess(["-m", "upstream_demo", "--port", str(upstream_port)])
        try:
            upstream.wait_for("listening on")
            async with client.get(f"{url}/api/whoami") as response:
                assert response.status == 200
        finally:
            upstream.stop()


async def test_slow_upstream_gives_504_and_the_gateway_keeps_serving(stack: Stack, lonely_gateway) -> None:
    _, url, upstream_port = lonely_gateway
    upstream = CapturedProcess(["-m", "upstream_demo", "--port", str(upstream_port)])
    try:
        upstream.wait_for("listening on")
        async with new_browser() as browser:
            cookies = await _copy_session(stack, browser)
        async with aiohttp.ClientSession(cookies=cookies) as client:
            started = time.monotonic()
            async with client.get(f"{url}/api/slow?seconds=5", headers=HTML) as response:
                assert response.status == 504
                assert "did not answer in time" in await response.text()
            assert time.monotonic() - started < 4
            results = await asyncio.gather(*(client.get(f"{url}/api/whoami") for _ in range(5)))
            assert [r.status for r in results] == [200] * 5
            for r in results:
                r.release()
    finally:
        upstream.stop()


@pytest.mark.parametrize(
    ("method", "path", "status", "allow"),
    [
        ("PUT", "/oauth2/sign_out", 405, "GET,POST"),
        ("HEAD", "/oauth2/sign_out", 405, "GET,POST"),  # a HEAD must not sign anyone out
        ("DELETE", "/oauth2/keys/some-kid", 405, "GET,HEAD"),
        ("POST", "/cognito_redirect", 405, "GET,HEAD"),
        ("POST", "/oauth2/userinfo", 405, "GET,HEAD"),
        ("PATCH", "/oauth2/", 405, "GET,HEAD"),
    ],
)
async def test_the_gateways_own_paths_never_reach_the_upstream(
    stack: Stack, alice: aiohttp.ClientSession, method: str, path: str, status: int, allow: str | None
) -> None:
    """Another method on a path of the gateway's own is its 405 (with Allow), for anyone, before any sign-in."""
    for who, headers in ((alice, {"Accept": "application/json"}), (alice, HTML)):
        async with who.request(method, f"{stack.url}{path}", headers=headers, allow_redirects=False) as response:
            assert response.status == status, (method, path, await response.text())
            assert response.headers.get("Allow") == allow
            assert "Traceback" not in await response.text()
    async with new_browser() as anonymous:
        async with anonymous.request(method, f"{stack.url}{path}", allow_redirects=False) as response:
            assert response.status == status, "no sign-in first: the answer is the same for anyone"
    assert f"{method} {path}" not in stack.upstream.output()


async def test_other_paths_under_oauth2_are_the_upstreams_as_in_oauth2_proxy(
    stack: Stack, alice: aiohttp.ClientSession
) -> None:
    """Apps own paths there (Spring's /oauth2/authorization/{id}): proxied under the rules, like any other path."""
    for method, path in (("GET", "/oauth2/authorization/demo"), ("POST", "/oauth2/token")):
        async with alice.request(method, f"{stack.url}{path}", allow_redirects=False) as response:
            assert response.status == 404, "the upstream's own 404: it serves no such page"
        deadline = time.monotonic() + 5
        while f"{method} {path}" not in stack.upstream.output():
            assert time.monotonic() < deadline, f"{method} {path} never reached the upstream"
            await asyncio.sleep(0.02)
    async with new_browser() as anonymous:
        async with anonymous.get(f"{stack.url}/oauth2/token", allow_redirects=False) as response:
            assert response.status == 401, "under the rules: a session first"


async def test_oauth2_start_is_sign_in_as_oauth2_proxy_names_it(stack: Stack) -> None:
    async with new_browser() as browser:
        async with browser.get(f"{stack.url}/oauth2/start?rd=/api/whoami", allow_redirects=False) as response:
            assert response.status == 302 and "/oauth2/authorize?" in response.headers["Location"]


@pytest.mark.parametrize("rd", ["/oauth2/start", "/oauth2/sign_in", "/cognito_redirect?code=x&state=y"])
async def test_a_sign_in_that_would_return_to_a_sign_in_or_the_callback_returns_home(stack: Stack, rd: str) -> None:
    async with new_browser() as browser:
        landed = await browse_and_sign_in(browser, URL(f"{stack.url}/oauth2/sign_in").with_query(rd=rd))
        assert landed.status == 200 and URL(str(landed.url)).path == "/", "no sign-in loop, no replayed callback"
