"""The whole product on loopback: dev_idp, upstream_demo and the gateway, each as its real ``python -m`` process.

``Stack.start()`` wires them the way docker-compose.yml and ``make demo`` do: dev_idp's printed environment block
becomes the gateway's COGNITO_* variables.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import secrets
import time
import urllib.request
from collections.abc import Mapping
from http.cookies import SimpleCookie
from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from yarl import URL

from gateway.config import Settings
from gateway.identity import Identity
from gateway.session_backends import CookieBackend
from gateway.session_cookies import SessionCookies
from gateway.user_session import UserSession

from .support import CapturedProcess, DevIdpProcess, free_port, start_dev_idp, write_json

SESSION_SECRET = base64.b64encode(secrets.token_bytes(32)).decode()


def directory_for(gateway_url: str, *, extra_users: list[dict] | None = None) -> dict:
    directory = json.loads((Path(__file__).parent.parent / "dev_idp" / "default_directory.json").read_text())
    client = directory["clients"][0]
    client["callback_urls"] = [f"{gateway_url}/cognito_redirect"]
    client["logout_urls"] = [f"{gateway_url}/", f"{gateway_url}/goodbye"]
    directory["users"].extend(extra_users or [])
    return directory


def start_upstream(env: Mapping[str, str] | None = None) -> tuple[CapturedProcess, str]:
    process = CapturedProcess(["-m", "upstream_demo", "--port", "0"], env)
    return process, process.wait_for(r"listening on (http://\S+)").group(1)


def start_gateway(env: Mapping[str, str], *, wait_ready: bool = True) -> CapturedProcess:
    # One process unless a test says otherwise (test_server_workers): the tests read its output and its state.
    process = CapturedProcess(["-m", "gateway"], {"GATEWAY_WORKERS": "1", **env})
    process.wait_for(r"listening on")
    if wait_ready:
        url = f"http://{env['GATEWAY_LISTEN']}/oauth2/healthz"
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    return process


@dataclasses.dataclass
class Stack:
    idp: DevIdpProcess
    upstream: CapturedProcess
    upstream_url: str
    gateway: CapturedProcess
    url: str
    env: dict[str, str]

    @classmethod
    def start(
        cls,
        tmp: Path,
        *,
        gateway_env: Mapping[str, str] | None = None,
        idp_args: tuple[str, ...] = (),
        extra_users: list[dict] | None = None,
        public_url: str | None = None,
    ) -> Stack:
        """``public_url``: where browsers reach the gateway when something (nginx, Caddy) stands in front."""
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        users = write_json(tmp / "users.json", directory_for(public_url or url, extra_users=extra_users))
        idp = start_dev_idp("--users", str(users), *idp_args)
        # As in make demo: upstream_demo checks x-amzn-oidc-data against this gateway's keys.
        upstream, upstream_url = start_upstream(
            {
                "UPSTREAM_DEMO_ALB_KEYS_URL": f"{url}/oauth2/keys",
                "UPSTREAM_DEMO_ALB_CLIENT_ID": idp.env["COGNITO_CLIENT_ID"],
            }
        )
        env = {
            **idp.env,
            "GATEWAY_UPSTREAM": upstream_url,
            "GATEWAY_PUBLIC_URL": public_url or url,
            "GATEWAY_LISTEN": f"127.0.0.1:{port}",
            "GATEWAY_SESSION_SECRET": SESSION_SECRET,
            **(gateway_env or {}),
        }
        gateway = start_gateway(env)
        return cls(idp, upstream, upstream_url, gateway, url, env)

    def stop(self) -> None:
        for process in (self.gateway, self.upstream, self.idp.process):
            process.stop()


def forged_cookie(env: Mapping[str, str], session: UserSession, **overrides: str) -> dict[str, str]:
    """The cookies a gateway configured by ``env`` (with ``overrides``) would set for ``session``."""
    settings = Settings.from_env({**env, **overrides})
    if not session.audience:
        session = dataclasses.replace(session, audience=settings.provider.audience)
    response = web.Response()
    value = CookieBackend(settings.session).cookie_value(session)
    SessionCookies(settings.session).write(make_mocked_request("GET", "/"), response, value, max_age=3600)
    written: SimpleCookie = SimpleCookie()
    for line in response.headers.getall("Set-Cookie", []):
        written.load(line)
    return {name: morsel.value for name, morsel in written.items() if morsel.value}


def alice_session(*, created: float, seen: float | None = None, groups: tuple[str, ...] = ()) -> UserSession:
    identity = Identity(sub="s", username="alice", email="alice@example.com", email_verified=True, groups=groups)
    return UserSession(
        identity=identity,
        created_at=int(created),
        auth_time=int(created),
        token_expires_at=int(time.time()) + 3600,
        last_seen=int(created if seen is None else seen),
    )


HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
_FORM = re.compile(r'<form method=post action="([^"]+)"')
_CSRF = re.compile(r'name=_csrf value="([^"]+)"')


async def fill_form(
    browser: aiohttp.ClientSession, page: aiohttp.ClientResponse, fields: dict[str, str], *, follow: bool = True
) -> aiohttp.ClientResponse:
    """Submit the hosted-UI form on ``page`` (already read) and follow redirects, as a browser does."""
    html = await page.text()
    action, csrf = _FORM.search(html), _CSRF.search(html)
    assert action and csrf, html[:500]
    target = URL(str(page.url)).join(URL(action.group(1).replace("&amp;", "&")))
    response = await browser.post(target, data={"_csrf": csrf.group(1), **fields}, headers=HTML, allow_redirects=follow)
    await response.read()
    return response


async def browse_and_sign_in(
    browser: aiohttp.ClientSession, url: str | URL, username: str = "alice", password: str = "alice-password"
) -> aiohttp.ClientResponse:
    """Open ``url`` through the gateway, get sent to the login form, fill it in, and land where we started."""
    async with browser.get(url, headers=HTML) as page:
        assert URL(str(page.url)).path == "/login", (page.status, page.url)
        return await fill_form(browser, page, {"username": username, "password": password})
