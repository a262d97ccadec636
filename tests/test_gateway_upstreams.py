"""Several upstreams behind one sign-in (GATEWAY_UPSTREAMS), each with its own rules, on real processes: two
upstream_demo processes, routed by path and by host, and a 404 from the gateway for a path that names neither."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import aiohttp
import pytest

from .stack import HTML, Stack, browse_and_sign_in, start_upstream
from .support import CapturedProcess, new_browser


@dataclasses.dataclass
class Routed:
    stack: Stack
    first: CapturedProcess
    second: CapturedProcess


@pytest.fixture(scope="module")
def routed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Routed]:
    (first, first_url), (second, second_url) = start_upstream(), start_upstream()
    env = {
        "GATEWAY_UPSTREAM": "",  # no fallback: a path no entry names is the gateway's 404
        "GATEWAY_UPSTREAMS": f"/api/echo/a/={first_url}; /api/echo/b/={second_url}; localhost/api/echo/={second_url}",
        "GATEWAY_RULES": "/api/echo/b/=group:admins",
    }
    stack = Stack.start(tmp_path_factory.mktemp("upstreams"), gateway_env=env)
    yield Routed(stack, first, second)
    stack.stop()
    first.stop()
    second.stop()


async def _cookies(stack: Stack, username: str) -> dict[str, str]:
    async with new_browser() as browser:
        await browse_and_sign_in(browser, f"{stack.url}/api/echo/a/start", username, f"{username}-password")
        return {c.key: c.value for c in browser.cookie_jar if c.key.startswith("_cognito_gateway")}


async def test_each_path_reaches_its_own_upstream_with_its_own_rules(routed: Routed) -> None:
    alice, bob = await _cookies(routed.stack, "alice"), await _cookies(routed.stack, "bob")
    url = routed.stack.url
    async with aiohttp.ClientSession(cookies=alice) as client:
        for path, process in (("/api/echo/a/one", routed.first), ("/api/echo/b/two", routed.second)):
            async with client.get(f"{url}{path}") as response:
                assert response.status == 200 and (await response.json())["raw_uri"] == path
            assert path in process.output(), f"{path} went to its own upstream"
    async with aiohttp.ClientSession(cookies=bob) as client:
        async with client.get(f"{url}/api/echo/b/two-for-bob") as response:
            assert response.status == 403, "the group rule of the second upstream's path"
        async with client.get(f"{url}/api/echo/a/one-for-bob") as response:
            assert response.status == 200
    assert "/api/echo/b/two-for-bob" not in routed.second.output()


async def test_a_host_entry_routes_by_host(routed: Routed) -> None:
    alice = await _cookies(routed.stack, "alice")
    async with aiohttp.ClientSession(cookies=alice) as client:
        headers = {"Host": f"localhost:{routed.stack.url.rsplit(':', 1)[1]}"}
        async with client.get(f"{routed.stack.url}/api/echo/by-host", headers=headers) as response:
            assert response.status == 200
    assert "/api/echo/by-host" in routed.second.output() and "/api/echo/by-host" not in routed.first.output()


async def test_a_path_no_entry_names_is_the_gateways_404(routed: Routed) -> None:
    alice = await _cookies(routed.stack, "alice")
    async with aiohttp.ClientSession(cookies=alice) as client:
        async with client.get(f"{routed.stack.url}/elsewhere", headers={"Accept": "application/json"}) as response:
            assert response.status == 404 and (await response.json())["error"] == "not_found"
        async with client.get(f"{routed.stack.url}/elsewhere", headers=HTML) as response:
            assert response.status == 404 and "text/html" in response.headers["Content-Type"]
    assert "/elsewhere" not in routed.first.output() + routed.second.output()


async def test_readiness_checks_every_upstream(routed: Routed) -> None:
    async with aiohttp.ClientSession() as client, client.get(f"{routed.stack.url}/oauth2/readyz") as response:
        assert response.status == 200 and (await response.json())["checks"]["upstream"] == "ok"
