"""IdP outages: the gateway starts without its IdP, answers 503 meanwhile, and recovers by itself."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
from yarl import URL

from .stack import HTML, SESSION_SECRET, Stack, directory_for, fill_form, start_gateway, start_upstream
from .support import CapturedProcess, DevIdpProcess, free_port, start_dev_idp, write_json


async def _wait_ready(client: aiohttp.ClientSession, url: str) -> None:
    deadline = time.monotonic() + 20
    while True:
        async with client.get(f"{url}/oauth2/readyz") as response:
            if response.status == 200:
                return
        assert time.monotonic() < deadline, "the gateway did not recover"
        await asyncio.sleep(0.2)


def _env_without_idp(tmp_path: Path) -> tuple[dict[str, str], Path, CapturedProcess]:
    """A gateway's environment whose IdP port nobody listens on yet; its users file; the upstream it proxies to."""
    idp_port, port = free_port(), free_port()
    url, idp_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{idp_port}"
    users = write_json(tmp_path / "users.json", directory_for(url))
    upstream, upstream_url = start_upstream()
    env = {
        "GATEWAY_PROVIDER": "cognito",
        "COGNITO_ISSUER": f"{idp_url}/local_devpool1",
        "COGNITO_CLIENT_ID": "gateway",
        "COGNITO_CLIENT_SECRET": "gateway-dev-secret-for-local-use-only",
        "GATEWAY_UPSTREAM": upstream_url,
        "GATEWAY_PUBLIC_URL": url,
        "GATEWAY_LISTEN": f"127.0.0.1:{port}",
        "GATEWAY_SESSION_SECRET": SESSION_SECRET,
        "GATEWAY_IDP_TIMEOUT": "2s",
    }
    return env, users, upstream


def _start_idp(env: dict[str, str], users: Path) -> DevIdpProcess:
    idp_url = env["COGNITO_ISSUER"].removesuffix("/local_devpool1")
    return start_dev_idp("--users", str(users), "--port", str(URL(idp_url).port), "--public-url", idp_url)


async def test_gateway_starts_without_its_idp_and_recovers(tmp_path: Path) -> None:
    env, users, upstream = _env_without_idp(tmp_path)
    url, idp_url = env["GATEWAY_PUBLIC_URL"], env["COGNITO_ISSUER"].removesuffix("/local_devpool1")
    gateway = start_gateway(env)
    idp = None
    try:
        async with aiohttp.ClientSession() as client:
            async with client.get(f"{url}/oauth2/readyz") as response:
                assert response.status == 503
                assert "not ready" in (await response.json())["checks"]["identity_provider"]
            async with client.get(f"{url}/", headers=HTML, allow_redirects=False) as response:
                assert response.status == 503
                assert "Sign-in is unavailable" in await response.text()
            async with client.get(f"{url}/api/whoami", allow_redirects=False) as response:
                assert response.status == 401, "API clients still get their 401"

            idp = _start_idp(env, users)
            await _wait_ready(client, url)
            async with client.get(f"{url}/", headers=HTML, allow_redirects=False) as response:
                assert response.status == 302 and response.headers["Location"].startswith(idp_url)
    finally:
        for process in (gateway, upstream, *([idp.process] if idp else [])):
            process.stop()
    assert "retrying" in gateway.output()


async def test_an_idp_that_starts_just_after_the_gateway_is_waited_for_before_listening(tmp_path: Path) -> None:
    """docker compose starts dev_idp after the gateway: a worker that listened first would answer its first users
    503 while another worker already said ready."""
    env, users, upstream = _env_without_idp(tmp_path)
    gateway = CapturedProcess(["-m", "gateway"], {"GATEWAY_WORKERS": "1", **env})
    gateway.wait_for(r"identity provider not there yet")  # its first attempt failed
    idp = _start_idp(env, users)  # about a second: within the gateway's startup grace
    try:
        gateway.wait_for(r"listening on")
        async with aiohttp.ClientSession() as client:
            async with client.get(env["GATEWAY_PUBLIC_URL"], headers=HTML, allow_redirects=False) as response:
                assert response.status == 302, "the first request already signs in"
        log = gateway.output()
        assert "not ready at startup" not in log
        assert log.index("identity provider ready") < log.index("listening on")
    finally:
        for process in (gateway, upstream, idp.process):
            process.stop()


async def test_token_endpoint_down_during_the_callback_is_503_not_a_crash(tmp_path: Path) -> None:
    stack = Stack.start(tmp_path, gateway_env={"GATEWAY_IDP_TIMEOUT": "2s"})
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
            async with browser.get(f"{stack.url}/", headers=HTML) as page:
                back = await fill_form(browser, page, {"username": "alice", "password": "alice-password"}, follow=False)
            stack.idp.process.stop()
            async with browser.get(back.headers["Location"], headers=HTML, allow_redirects=False) as response:
                assert response.status == 503
                assert "identity provider cannot be reached" in await response.text()
            async with browser.get(f"{stack.url}/oauth2/healthz") as response:
                assert response.status == 200
    finally:
        stack.stop()
