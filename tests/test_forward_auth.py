"""Forward-auth: ``/oauth2/auth`` behind a real nginx (``auth_request``) and a real Caddy (``forward_auth``), with the
configurations the README gives, and the trust rules for the front proxy's description of the original request.

The app behind the front proxy is upstream_demo, reached by nginx or Caddy directly (not through the gateway), so
a request only gets there when the gateway said yes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from .front_proxies import FrontProxy
from .stack import HTML, Stack, fill_form
from .support import free_port, new_browser


@dataclasses.dataclass
class Fronted:
    stack: Stack
    proxy: FrontProxy

    @property
    def url(self) -> str:
        return self.proxy.url


def _fronted(kind: str, tmp: Path) -> Fronted:
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    env = {"GATEWAY_TRUSTED_PROXIES": "127.0.0.1", "GATEWAY_RULES": "/admin=group:admins; /api/echo/open/=public"}
    stack = Stack.start(tmp, gateway_env=env, public_url=public)
    app_port = int(URL(stack.upstream_url).port or 0)
    gateway_port = int(stack.env["GATEWAY_LISTEN"].rsplit(":", 1)[1])
    try:
        proxy = FrontProxy(kind, tmp, port=port, gateway=gateway_port, app=app_port)
    except BaseException:
        stack.stop()
        raise
    return Fronted(stack, proxy)


@pytest.fixture(scope="module", params=["nginx", "caddy"])
def fronted(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fronted]:
    running = _fronted(request.param, tmp_path_factory.mktemp(request.param))
    yield running
    running.proxy.stop()
    running.stack.stop()


async def test_a_browser_signs_in_through_the_front_proxy_and_reaches_its_app(fronted: Fronted) -> None:
    async with new_browser() as browser:
        async with browser.get(f"{fronted.url}/api/whoami", headers=HTML) as page:
            assert URL(str(page.url)).path == "/login", f"{fronted.proxy.kind} sent the browser to sign in"
            landed = await fill_form(browser, page, {"username": "alice", "password": "alice-password"})
        assert landed.status == 200 and URL(str(landed.url)).path == "/api/whoami", landed.url
        assert str(landed.url).startswith(fronted.url), "the whole round trip stayed on the front proxy"
        headers = {name.lower(): value for name, value in (await landed.json())["headers"]}
    if fronted.proxy.kind == "nginx":
        assert headers["x-forwarded-user"] == "alice" and headers["x-forwarded-groups"] == "admins"
    else:  # Caddy copies the X-Auth-Request-* headers as they are
        assert headers["x-auth-request-user"] == "alice" and headers["x-auth-request-groups"] == "admins"


async def test_without_a_session_the_app_is_never_reached(fronted: Fronted) -> None:
    before = fronted.stack.upstream.output().count("GET /api/whoami?never")
    async with aiohttp.ClientSession() as client:
        url = f"{fronted.url}/api/whoami?never=1"
        async with client.get(url, headers=HTML, allow_redirects=False) as response:
            assert response.status == 302
        async with client.get(url, headers={"Accept": "application/json"}, allow_redirects=False) as response:
            assert response.status in (302, 401)
    assert fronted.stack.upstream.output().count("GET /api/whoami?never") == before


async def test_rules_are_decided_on_the_original_request(fronted: Fronted) -> None:
    async with aiohttp.ClientSession() as client:
        async with client.get(f"{fronted.url}/api/echo/open/x", allow_redirects=False) as response:
            assert response.status == 200, "a public path of the original request passes without a session"
    async with new_browser() as browser:
        async with browser.get(f"{fronted.url}/", headers=HTML) as page:
            await fill_form(browser, page, {"username": "bob", "password": "bob-password"})
        async with browser.get(f"{fronted.url}/admin", allow_redirects=False) as response:
            assert response.status == 403, "bob is refused by the group rule on /admin"


# The endpoint itself, asked directly -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def direct(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {"GATEWAY_RULES": "/public/=public; /admin/=group:admins"}
    running = Stack.start(tmp_path_factory.mktemp("direct"), gateway_env=env)
    yield running
    running.stop()


async def _auth(stack: Stack, headers: dict[str, str], query: str = "", cookies: dict | None = None) -> int:
    async with aiohttp.ClientSession(cookies=cookies) as client:
        async with client.get(f"{stack.url}/oauth2/auth{query}", headers=headers, allow_redirects=False) as response:
            return response.status


async def test_an_untrusted_peer_cannot_name_a_public_path(direct: Stack) -> None:
    # No GATEWAY_TRUSTED_PROXIES here: X-Forwarded-Uri is ignored and the global rule (signed in) applies.
    for header in ("X-Forwarded-Uri", "X-Original-URL"):
        assert await _auth(direct, {header: "/public/x", **HTML}) == 401, "never a redirect: nginx takes 2xx/401/403"


async def test_allowed_groups_and_domains_narrow_the_decision(direct: Stack) -> None:
    async with new_browser() as browser:
        async with browser.get(f"{direct.url}/", headers=HTML) as page:
            await fill_form(browser, page, {"username": "bob", "password": "bob-password"})
        cookies = {c.key: c.value for c in browser.cookie_jar if c.key.startswith("_cognito_gateway")}
    async with aiohttp.ClientSession(cookies=cookies) as client:
        async with client.get(f"{direct.url}/oauth2/auth") as response:
            assert response.status == 202 and response.headers["X-Auth-Request-User"] == "bob"
            assert response.headers["X-Auth-Request-Email"] == "bob@example.com"
    assert await _auth(direct, {}, "?allowed_groups=admins", cookies) == 403
    assert await _auth(direct, {}, "?allowed_email_domains=example.com", cookies) == 202
    assert await _auth(direct, {}, "?allowed_email_domains=other.example", cookies) == 403
    assert await _auth(direct, {}, "?allowed_email_domains=*", cookies) == 202, "oauth2-proxy's any domain"
    assert await _auth(direct, {}, "?allowed_emails=alice@example.com,boss@example.com", cookies) == 403
    assert await _auth(direct, {}, "?allowed_emails=alice@example.com,Bob@Example.com", cookies) == 202
    assert await _auth(direct, {}, "?allowed_emails=bob@example.com&allowed_groups=admins", cookies) == 403, "all lists"


async def test_x_forwarded_for_is_replaced_from_untrusted_peers(direct: Stack) -> None:
    async with new_browser() as browser:
        async with browser.get(f"{direct.url}/", headers=HTML) as page:
            await fill_form(browser, page, {"username": "alice", "password": "alice-password"})
        async with browser.get(f"{direct.url}/api/whoami", headers={"X-Forwarded-For": "6.6.6.6"}) as response:
            seen = dict((await response.json())["headers"])
    assert seen["X-Forwarded-For"] == "127.0.0.1"


async def test_x_forwarded_for_is_kept_and_appended_behind_a_trusted_proxy(tmp_path: Path) -> None:
    stack = Stack.start(tmp_path, gateway_env={"GATEWAY_TRUSTED_PROXIES": "127.0.0.0/8, ::1"})
    try:
        async with new_browser() as browser:
            async with browser.get(f"{stack.url}/", headers=HTML) as page:
                await fill_form(browser, page, {"username": "alice", "password": "alice-password"})
            sent = {"X-Forwarded-For": "203.0.113.7, 198.51.100.1"}
            async with browser.get(f"{stack.url}/api/whoami", headers=sent) as response:
                seen = dict((await response.json())["headers"])
        assert seen["X-Forwarded-For"] == "203.0.113.7, 198.51.100.1, 127.0.0.1"
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def trusting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The gateway as nginx or Caddy on this machine would see it: the test client is the trusted front proxy."""
    env = {"GATEWAY_RULES": "/public/=public; /admin/=group:admins", "GATEWAY_TRUSTED_PROXIES": "127.0.0.0/8"}
    running = Stack.start(tmp_path_factory.mktemp("trusting"), gateway_env=env)
    yield running
    running.stop()


async def test_a_trusted_proxy_is_believed_about_the_original_path(trusting: Stack) -> None:
    assert await _auth(trusting, {"X-Forwarded-Uri": "/public/x"}) == 202
    assert await _auth(trusting, {"X-Forwarded-Uri": "/admin/x"}) == 401


@pytest.mark.parametrize("header", ["X-Forwarded-Uri", "X-Original-URL", "X-Original-URI"])
@pytest.mark.parametrize("uri", ["//admin/public/x", "//evil.example/public/x"])
async def test_an_original_path_starting_with_two_slashes_is_decided_as_that_path(
    trusting: Stack, header: str, uri: str
) -> None:
    # Read as a URL, "//admin/public/x" is the host "admin" and the public path "/public/x"; the front proxy then
    # sends the app "//admin/public/x", which it may read as "/admin/public/x".
    assert await _auth(trusting, {header: uri}) in (400, 401)


@pytest.mark.parametrize(
    ("uri", "status"), [("http://a\\b/x", 400), ("http://[::1/x", 400), ("//a\\b/x", 400), ("//[zz", 401)]
)
@pytest.mark.parametrize("header", ["X-Forwarded-Uri", "X-Original-URL"])
async def test_an_original_uri_that_is_no_url_is_a_clear_answer_not_a_500(
    trusting: Stack, header: str, uri: str, status: int
) -> None:
    assert await _auth(trusting, {header: uri}) == status
    assert "Traceback" not in trusting.gateway.output()


async def test_forward_auth_takes_any_method_as_oauth2_proxys_does(direct: Stack) -> None:
    """Traefik with preserveRequestMethod sends the original request's method."""
    async with new_browser() as browser:
        async with browser.get(f"{direct.url}/", headers=HTML) as page:
            await fill_form(browser, page, {"username": "bob", "password": "bob-password"})
        for method in ("POST", "PUT", "DELETE"):
            async with browser.request(method, f"{direct.url}/oauth2/auth", allow_redirects=False) as response:
                assert response.status == 202, method
    async with aiohttp.ClientSession() as anonymous:
        async with anonymous.post(f"{direct.url}/oauth2/auth", allow_redirects=False) as response:
            assert response.status == 401
