"""The gateway end to end: real dev_idp, upstream_demo and gateway processes, a scripted browser."""

from __future__ import annotations

import re

import aiohttp
import pytest
from yarl import URL

from .stack import HTML, Stack, browse_and_sign_in, fill_form
from .support import new_browser


async def test_sign_in_lands_on_the_upstream_as_alice(stack: Stack) -> None:
    async with new_browser() as browser:
        page = await browse_and_sign_in(browser, f"{stack.url}/")
        assert page.status == 200 and str(page.url) == f"{stack.url}/"
        html = await page.text()
        assert "Hello, <b id=user>alice</b>" in html
        assert "alice@example.com" in html and "admins" in html
        async with browser.get(f"{stack.url}/api/whoami") as response:
            headers = dict((await response.json())["headers"])
        assert headers["X-Forwarded-User"] == "alice"
        assert headers["X-Forwarded-Email"] == "alice@example.com"
        assert headers["X-Forwarded-Groups"] == "admins"
        assert headers["X-Forwarded-Preferred-Username"] == "alice.l"
        assert headers["X-Amzn-Oidc-Identity"]
        assert headers["X-Forwarded-Proto"] == "http"
        assert headers["X-Forwarded-Host"] == URL(stack.url).raw_authority
        assert headers["X-Forwarded-For"] == "127.0.0.1"
        assert "_cognito_gateway" not in headers.get("Cookie", ""), "the gateway's cookies never go upstream"


async def test_the_original_url_is_kept_across_sign_in(stack: Stack) -> None:
    target = "/admin?tab=users&x=%2Fy"
    async with new_browser() as browser:
        async with browser.get(URL(f"{stack.url}{target}", encoded=True), headers=HTML) as page:
            back = await fill_form(browser, page, {"username": "alice", "password": "alice-password"}, follow=False)
        async with browser.get(URL(back.headers["Location"], encoded=True), allow_redirects=False) as callback:
            assert callback.status == 302
            assert callback.headers["Location"] == target, "byte for byte, %2F included"


async def test_userinfo(stack: Stack) -> None:
    async with new_browser() as browser:
        async with browser.get(f"{stack.url}/oauth2/userinfo") as response:
            assert response.status == 401 and (await response.json())["error"] == "unauthorized"
        nav = {"Accept": "text/html", "Sec-Fetch-Mode": "navigate"}
        async with browser.get(f"{stack.url}/oauth2/userinfo", headers=nav, allow_redirects=False) as response:
            assert response.status == 401, "oauth2-proxy's userinfo: a 401 even for a browser, never a redirect"
        await browse_and_sign_in(browser, f"{stack.url}/", "bob", "bob-password")
        async with browser.get(f"{stack.url}/oauth2/userinfo") as response:
            body = await response.json()
        assert body["user"] == "bob" and body["email"] == "bob@example.com" and body["groups"] == []


async def test_bob_is_refused_the_admins_page_by_the_app(stack: Stack) -> None:
    async with new_browser() as browser:
        page = await browse_and_sign_in(browser, f"{stack.url}/admin", "bob", "bob-password")
        assert page.status == 403 and "admins only" in await page.text()


@pytest.mark.parametrize(
    "headers",
    [
        {"Accept": "application/json"},
        {"Accept": "*/*"},
        {"Accept": "text/html", "X-Requested-With": "XMLHttpRequest"},
        {"Accept": "text/html", "Sec-Fetch-Mode": "cors"},
        {},
    ],
)
async def test_api_clients_get_401_json_never_a_redirect(stack: Stack, headers: dict[str, str]) -> None:
    async with aiohttp.ClientSession() as client:
        async with client.get(f"{stack.url}/api/whoami", headers=headers, allow_redirects=False) as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"].startswith("Bearer ")
            body = await response.json()
        assert body["error"] == "unauthorized" and body["sign_in_url"] == "/oauth2/sign_in?rd=/api/whoami"
        async with client.post(f"{stack.url}/api/upload", data=b"x", headers=HTML, allow_redirects=False) as response:
            assert response.status == 401, "a non-GET is never redirected, even when it accepts HTML"


async def test_head_navigation_is_redirected(stack: Stack) -> None:
    async with (
        aiohttp.ClientSession() as client,
        client.head(f"{stack.url}/", headers=HTML, allow_redirects=False) as response,
    ):
        assert response.status == 302


async def test_sign_out_ends_the_hosted_ui_session_too(stack: Stack) -> None:
    async with new_browser() as browser:
        await browse_and_sign_in(browser, f"{stack.url}/")
        async with browser.get(f"{stack.url}/oauth2/sign_out", allow_redirects=False) as response:
            assert response.status == 302
            logout = URL(response.headers["Location"])
        assert str(logout.with_query(None)) == f"{stack.idp.url}/logout"
        assert logout.query["client_id"] == "gateway" and logout.query["logout_uri"] == f"{stack.url}/"
        async with browser.get(logout, headers=HTML) as page:
            # Cognito's /logout -> the gateway's "/" -> no session -> authorize -> no hosted-UI session -> form.
            assert URL(str(page.url)).path == "/login" and page.status == 200
        async with browser.get(f"{stack.url}/api/whoami") as response:
            assert response.status == 401


async def test_sign_out_with_rd_and_post(stack: Stack) -> None:
    async with new_browser() as browser:
        await browse_and_sign_in(browser, f"{stack.url}/")
        async with browser.post(f"{stack.url}/oauth2/sign_out?rd=/goodbye", allow_redirects=False) as response:
            assert URL(response.headers["Location"]).query["logout_uri"] == f"{stack.url}/goodbye"
        async with browser.get(f"{stack.url}/oauth2/userinfo") as response:
            assert response.status == 401


async def test_sign_in_endpoint_honours_rd(stack: Stack) -> None:
    async with new_browser() as browser:
        async with browser.get(f"{stack.url}/oauth2/sign_in?rd=/api/whoami%3Fa%3D1", headers=HTML) as page:
            assert URL(str(page.url)).path == "/login"
            landed = await fill_form(browser, page, {"username": "alice", "password": "alice-password"})
        assert str(landed.url) == f"{stack.url}/api/whoami?a=1"


async def test_health_and_readiness(stack: Stack) -> None:
    async with aiohttp.ClientSession() as client:
        async with client.get(f"{stack.url}/oauth2/healthz") as response:
            assert response.status == 200 and (await response.json())["status"] == "ok"
        async with client.get(f"{stack.url}/oauth2/readyz") as response:
            body = await response.json()
            assert response.status == 200, body
            assert body["checks"] == {"identity_provider": "ok", "upstream": "ok", "session_store": "ok"}


async def test_stack_fixture_reads_the_real_banner(stack: Stack) -> None:
    """The variables the fixture read from dev_idp's banner name the running dev_idp and a client it accepts."""
    env = stack.env
    banner = stack.idp.process.output().splitlines()
    for name in ("GATEWAY_PROVIDER", "COGNITO_ISSUER", "COGNITO_DOMAIN", "COGNITO_CLIENT_ID", "COGNITO_CLIENT_SECRET"):
        assert f"{name}={env[name]}" in banner, name
    async with aiohttp.ClientSession() as client:
        async with client.get(f"{env['COGNITO_ISSUER']}/.well-known/openid-configuration") as response:
            discovery = await response.json()
        assert discovery["issuer"] == env["COGNITO_ISSUER"]
        assert discovery["token_endpoint"] == f"{env['COGNITO_DOMAIN']}/oauth2/token"
        # The client's id and secret authenticate: the grant is refused for the client, not the client itself.
        data = {"grant_type": "client_credentials"}
        for secret, error in ((env["COGNITO_CLIENT_SECRET"], "unauthorized_client"), ("wrong", "invalid_client")):
            auth = {"Authorization": aiohttp.encode_basic_auth(env["COGNITO_CLIENT_ID"], secret)}
            async with client.post(discovery["token_endpoint"], data=data, headers=auth) as response:
                assert (await response.json())["error"] == error, secret


def test_container_healthcheck_follows_gateway_listen(stack: Stack) -> None:
    import os
    import subprocess
    import sys

    from .support import ROOT, free_port

    def check(listen: str) -> int:
        env = {**os.environ, "GATEWAY_LISTEN": listen}
        return subprocess.run(
            [sys.executable, "-m", "gateway.healthcheck"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            timeout=30,
            check=False,
        ).returncode

    assert check(stack.env["GATEWAY_LISTEN"].replace("127.0.0.1", "0.0.0.0")) == 0
    assert check(f"127.0.0.1:{free_port()}") == 1


async def test_who_am_i_page_for_people_and_json_for_scripts(stack: Stack) -> None:
    async with new_browser() as browser:
        async with browser.get(f"{stack.url}/oauth2/", headers=HTML, allow_redirects=False) as response:
            assert response.status == 302, "signed out: sent to sign in"
        await browse_and_sign_in(browser, f"{stack.url}/")
        async with browser.get(f"{stack.url}/oauth2/", headers=HTML) as page:
            html = await page.text()
            assert page.status == 200 and page.headers["Cache-Control"] == "no-store"
        assert "Signed in as alice (alice@example.com)." in html and "Groups: admins." in html
        assert re.search(r"Your session ends at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", html)
        assert '<form method=post action="/oauth2/sign_out">' in html
        async with browser.get(f"{stack.url}/oauth2/") as api:
            body = await api.json()
        assert body["user"] == "alice" and body["groups"] == ["admins"] and body["sessionEndsAt"].endswith("Z")
    async with aiohttp.ClientSession() as client, client.get(f"{stack.url}/oauth2/") as response:
        assert response.status == 401
