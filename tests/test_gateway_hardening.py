"""What an attacker tries first, sent for real: raw-socket requests with bad targets and Host headers, credentials
and identity headers an upstream might trust, tossed and foreign cookies, hostile claims and return paths.

The raw requests go through ``http.client`` on a plain socket, so nothing between the test and the gateway fixes
them up; everything else through aiohttp on the real processes of one stack.
"""

from __future__ import annotations

import asyncio
import dataclasses
import http.client
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest
from yarl import URL

from .cluster import RedisServer
from .stack import HTML, Stack, alice_session, browse_and_sign_in, fill_form, forged_cookie
from .support import new_browser

BIG = [f"team-{i:03d}-engineering" for i in range(250)]
HUGE = [f"team-{i:04d}-engineering-with-a-long-name" for i in range(1500)]
USERS = [
    {"username": "gina", "password": "gina-password", "email": "gina@example.com", "groups": BIG},
    {"username": "hugo", "password": "hugo-password", "email": "hugo@example.com", "groups": HUGE},
    {
        "username": "sam",
        "password": "sam-password",
        "email": "sam@example.com",
        "groups": [" admins", "ops,dev"],
        "attributes": {"preferred_username": "\udc80\x07\u2028x"},
    },
]


@pytest.fixture(scope="module")
def hard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {"GATEWAY_STRIP_HEADERS": "X-Site-User,X-Corp-*", "GATEWAY_LOG_LEVEL": "debug"}
    running = Stack.start(tmp_path_factory.mktemp("hard"), gateway_env=env, extra_users=USERS)
    yield running
    running.stop()


def raw(stack: Stack, head: str, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    """Send ``head`` (the request line and headers, CRLF-separated, without the blank line) as bytes."""
    url = URL(stack.url)
    with socket.create_connection((url.host, url.port), timeout=timeout) as sock:
        sock.sendall(head.encode("latin-1") + b"\r\n\r\n")
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


def upstream_saw(stack: Stack, marker: str) -> bool:
    return marker in stack.upstream.output()


# Targets and Host ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "host_lines",
    [
        ["Host: evil.example@127.0.0.1"],
        ["Host: 127.0.0.1 evil.example"],
        ["Host: a.example, b.example"],
        ["Host: a.example", "Host: b.example"],
        ["Host: a.example/x"],
        # Shaped like host[:port] but unreadable by yarl, which builds request.url from it: once a 500.
        ["Host: 127.0.0.1:99999"],
        ["Host: localhost:65536"],
        ["Host: [:::]"],
        ["Host: xn--zz"],
        [],
    ],
)
def test_a_bad_host_is_a_400_and_never_proxied(hard: Stack, host_lines: list[str]) -> None:
    marker = f"/api/echo/host-{abs(hash(tuple(host_lines)))}"
    head = "\r\n".join([f"GET {marker} HTTP/1.1", *host_lines, "Accept: application/json", "Connection: close"])
    status, _, body = raw(hard, head)
    # A missing or repeated Host is already refused by aiohttp's parser; the rest by request_hygiene.
    assert status == 400 and (b"invalid_host" in body or b"'Host' header" in body), body
    assert not upstream_saw(hard, marker)


def test_http_1_0_without_host_is_fine(hard: Stack) -> None:
    status, _, _ = raw(hard, "GET /api/whoami HTTP/1.0\r\nAccept: application/json")
    assert status == 401


@pytest.mark.parametrize("target", ["http://other.example/admin", "https://127.0.0.1/api/whoami", "*"])
def test_absolute_form_is_refused_before_any_sign_in(hard: Stack, target: str) -> None:
    status, headers, body = raw(hard, f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/html")
    assert status == 400 and "location" not in headers and "set-cookie" not in headers
    if target != "*":  # the asterisk form is refused by aiohttp's parser already
        assert b"must be a path on this site" in body


# Headers an upstream might trust ---------------------------------------------------------------------------------
SPOOFED = [
    ("X-WEBAUTH-USER", "mallory"),
    ("X_WEBAUTH_USER", "mallory"),
    ("X-Webauth-Email", "mallory@evil.example"),
    ("X-WEBAUTH-GROUPS", "Admin"),
    ("Remote-User", "mallory"),
    ("Remote-Groups", "admins"),
    ("Remote_Email", "mallory@evil.example"),
    ("X-Remote-User", "mallory"),
    ("X-Remote-Group", "system:masters"),
    ("X-authentik-username", "mallory"),
    ("X-Proxy-Remote-User", "mallory"),
    ("Cf-Access-Authenticated-User-Email", "mallory@evil.example"),
    ("X-Goog-Authenticated-User-Email", "mallory@evil.example"),
    ("X-MS-CLIENT-PRINCIPAL-NAME", "mallory"),
    ("OIDC_CLAIM_email", "mallory@evil.example"),
    ("X-Vouch-User", "mallory"),
    ("X-SSL-Client-S-DN", "CN=mallory"),
    ("X-Site-User", "mallory"),
    ("X_Corp_Role", "mallory"),
    ("Authorization", "Basic bWFsbG9yeTpwYXNz"),
]


async def test_identity_headers_of_every_well_known_proxy_and_the_clients_authorization_are_stripped(
    hard: Stack,
) -> None:
    async with new_browser() as browser:
        await browse_and_sign_in(browser, f"{hard.url}/", "bob", "bob-password")
        async with browser.get(f"{hard.url}/api/whoami", headers=SPOOFED) as response:
            received = (await response.json())["headers"]
    assert not any("mallory" in value or "bWFsbG9y" in value for _, value in received), received
    assert "authorization" not in {name.lower() for name, _ in received}


async def test_an_upstream_cannot_set_the_gateways_cookies(hard: Stack) -> None:
    async with new_browser() as browser:
        await browse_and_sign_in(browser, f"{hard.url}/")
        query = "name=_cognito_gateway&name=_cognito_gateway_1&name=_cognito_gateway_login_x&name=app_theme"
        async with browser.get(f"{hard.url}/api/set-cookie?{query}") as response:
            assert response.status == 200
            set_cookies = response.headers.getall("Set-Cookie", [])
        assert [c.split("=", 1)[0] for c in set_cookies] == ["app_theme"]
        async with browser.get(f"{hard.url}/api/whoami") as response:
            assert response.status == 200, "the session survived"
    assert "dropped the upstream's Set-Cookie for the gateway's cookie '_cognito_gateway'" in hard.gateway.output()


# Cookies ---------------------------------------------------------------------------------------------------------
async def test_two_session_cookies_of_one_name_are_no_session(hard: Stack) -> None:
    import time

    good = forged_cookie(hard.env, alice_session(created=time.time()))
    value = good["_cognito_gateway"]
    assert len(good) == 1
    async with aiohttp.ClientSession() as client:
        for cookie_lines in (
            [f"_cognito_gateway={value}"],  # the control: one cookie works
            [f"_cognito_gateway={value}; _cognito_gateway=tossed"],
            [f"_cognito_gateway=tossed; _cognito_gateway={value}"],
            [f"_cognito_gateway={value}", "_cognito_gateway=tossed"],
            [f"_cognito_gateway={value}", f"_cognito_gateway={value}"],
        ):
            headers = [("Cookie", line) for line in cookie_lines]
            async with client.get(f"{hard.url}/api/whoami", headers=headers) as response:
                expected = 200 if len(cookie_lines) == 1 and "tossed" not in cookie_lines[0] else 401
                assert response.status == expected, cookie_lines


@pytest.mark.parametrize("odd", ["a{b", "a:b", "a/b", "a[b]", "a@b", "A" * 16])
async def test_a_cookie_that_only_looks_like_login_state_changes_nothing(hard: Stack, odd: str) -> None:
    """A name no Set-Cookie can carry (a "{" or "/") is not the gateway's: the sign-in redirect goes out as usual."""
    headers = {"Accept": "text/html", "Cookie": f"_cognito_gateway_login_{odd}=x; _cognito_gateway={odd}"}
    async with aiohttp.ClientSession() as client:
        async with client.get(f"{hard.url}/page", headers=headers, allow_redirects=False) as response:
            assert response.status == 302, await response.text()
            written = response.headers.getall("Set-Cookie")
    assert len(written) == 1 and written[0].startswith("_cognito_gateway_login_") and odd not in written[0]


async def test_a_session_from_a_sibling_deployment_with_the_same_secret_is_refused(hard: Stack) -> None:
    import time

    session = dataclasses.replace(
        alice_session(created=time.time()), audience=f"{hard.env['COGNITO_ISSUER']} another-client"
    )
    async with aiohttp.ClientSession(cookies=forged_cookie(hard.env, session)) as client:
        async with client.get(f"{hard.url}/api/whoami") as response:
            assert response.status == 401


async def test_sign_in_starts_afresh_even_with_a_session(hard: Stack) -> None:
    async with new_browser() as browser:
        await browse_and_sign_in(browser, f"{hard.url}/")
        async with browser.get(f"{hard.url}/oauth2/sign_in?rd=/api/whoami", allow_redirects=False) as response:
            assert response.status == 302 and "/oauth2/authorize" in response.headers["Location"]


# Big and hostile identities --------------------------------------------------------------------------------------
@pytest.mark.parametrize("username", ["gina", "hugo"])
async def test_an_identity_too_big_for_cookies_gets_a_page_that_says_why(hard: Stack, username: str) -> None:
    async with new_browser() as browser:
        async with browser.get(f"{hard.url}/api/whoami", headers=HTML) as page:
            landed = await fill_form(browser, page, {"username": username, "password": f"{username}-password"})
        assert landed.status == 400
        text = await landed.text()
    assert "than fits in browser cookies" in text and "GATEWAY_SESSION_STORE=redis" in text


def test_a_user_in_250_groups_signs_in_with_the_redis_store(tmp_path: Path) -> None:
    redis = RedisServer()
    env = {"GATEWAY_SESSION_STORE": "redis", "GATEWAY_REDIS_URL": redis.url}
    stack = Stack.start(tmp_path, gateway_env=env, extra_users=USERS)

    async def sign_in_as_gina() -> list[str]:
        async with new_browser() as browser:
            landed = await browse_and_sign_in(browser, f"{stack.url}/api/whoami", "gina", "gina-password")
            assert landed.status == 200
            return dict((await landed.json())["headers"])["X-Forwarded-Groups"].split(",")

    try:
        assert asyncio.run(sign_in_as_gina()) == BIG
    finally:
        stack.stop()
        redis.stop()


async def test_hostile_claims_are_encoded_everywhere_they_go(hard: Stack) -> None:
    async with new_browser() as browser:
        landed = await browse_and_sign_in(browser, f"{hard.url}/api/whoami", "sam", "sam-password")
        assert landed.status == 200
        headers = dict((await landed.json())["headers"])
        async with browser.get(f"{hard.url}/oauth2/userinfo") as response:
            assert response.status == 200
            info = await response.json()
        async with browser.get(f"{hard.url}/", headers=HTML) as page:
            assert page.status == 200
    assert headers["X-Forwarded-Groups"] == "%20admins,ops%2Cdev", "no splitter or trimmer can read ' admins' as admins"
    assert headers["X-Forwarded-Preferred-Username"] == "%EF%BF%BD%07%E2%80%A8x"
    assert info["preferredUsername"] == "\ufffd\x07\u2028x"
    assert "unhandled error" not in hard.gateway.output()


# Redirects and pages -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("rd", "lands"),
    [
        ("/caf%C3%A9%E2%80%A8?q=a b", "/caf%C3%A9%E2%80%A8?q=a%20b"),
        ("/cognito_redirect?code=x&state=y", "/"),
        ("/oauth2/sign_in?rd=/x", "/"),
        ("/oauth2/sign_out", "/"),
        ("/%6fauth2/sign_out", "/"),
    ],
)
async def test_every_location_is_printable_ascii_and_never_one_of_our_endpoints(
    hard: Stack, rd: str, lands: str
) -> None:
    async with new_browser() as browser:
        url = URL(f"{hard.url}/oauth2/sign_in?rd={quote(rd, safe='')}", encoded=True)
        async with browser.get(url, headers=HTML) as page:
            back = await fill_form(browser, page, {"username": "alice", "password": "alice-password"}, follow=False)
        async with browser.get(URL(back.headers["Location"], encoded=True), allow_redirects=False) as callback:
            location = callback.headers["Location"]
            assert callback.headers["Referrer-Policy"] == "no-referrer"
    assert re.fullmatch(r"[\x21-\x7e]+", location), location
    assert location == lands


async def test_gateway_pages_are_not_sniffed_cached_or_referred(hard: Stack) -> None:
    async with aiohttp.ClientSession() as client:
        for path, headers in (("/oauth2/sign_in", HTML), ("/cognito_redirect", HTML), ("/api/whoami", {})):
            async with client.get(f"{hard.url}{path}", headers=headers, allow_redirects=False) as response:
                assert response.status in (302, 400, 401), path
                assert response.headers["Cache-Control"] == "no-store"
                assert response.headers["X-Content-Type-Options"] == "nosniff"
                assert response.headers["Referrer-Policy"] == "no-referrer"


async def test_no_log_line_holds_a_cookie_a_code_or_a_token_even_at_debug(hard: Stack) -> None:
    async with new_browser() as browser:
        async with browser.get(f"{hard.url}/api/whoami", headers=HTML) as page:
            back = await fill_form(browser, page, {"username": "alice", "password": "alice-password"}, follow=False)
        code = URL(back.headers["Location"]).query["code"]
        async with browser.get(URL(back.headers["Location"], encoded=True)) as landed:
            assert landed.status == 200
        secrets = [code] + [c.value[:40] for c in browser.cookie_jar if c.key.startswith("_cognito_gateway")]
    output = hard.gateway.output()
    assert "DEBUG" in output, "the gateway logs at debug level in this test"
    for secret in secrets:
        assert secret not in output
    assert "eyJ" not in output, "no JWT in the log"


async def test_a_callback_naming_another_issuer_is_refused(hard: Stack) -> None:
    """RFC 9207: the issuer a provider names in its callback must be the configured one (mix-up attacks)."""
    async with new_browser() as browser:
        async with browser.get(f"{hard.url}/api/whoami", headers=HTML) as page:
            back = await fill_form(browser, page, {"username": "alice", "password": "alice-password"}, follow=False)
        tampered = URL(back.headers["Location"]).update_query(iss="https://evil.example/pool")
        async with browser.get(tampered, headers=HTML, allow_redirects=False) as callback:
            assert callback.status == 400 and "another identity provider" in await callback.text()
        async with browser.get(f"{hard.url}/api/whoami") as response:
            assert response.status == 401, "no session came of it"


MID_UPLOAD = [
    # let through (a public path), the body cut short: chunked, and nothing of it at all
    ("/api/echo/open/upload", "Transfer-Encoding: chunked\r\nContent-Type: application/octet-stream", b"5\r\nhel"),
    ("/api/echo/open/upload", "Transfer-Encoding: chunked\r\nContent-Type: application/octet-stream", b""),
    # refused for want of a session, while the form is read to keep it through the sign-in (preserved POST)
    (
        "/app/form",
        "Content-Length: 1000\r\nContent-Type: application/x-www-form-urlencoded\r\nAccept: text/html",
        b"a=1&b=2",
    ),
]


def test_a_client_that_leaves_mid_upload_is_logged_as_gone_not_as_a_500(tmp_path: Path) -> None:
    """The client disconnects before its body is complete: one info line and an access line with nginx's 499, no
    traceback and no 500, wherever the body was being read."""
    stack = Stack.start(tmp_path, gateway_env={"GATEWAY_PUBLIC_PATHS": "/api/echo/open/"})
    try:
        url = URL(stack.url)
        for path, headers, body_start in MID_UPLOAD:
            with socket.create_connection((url.host, url.port), timeout=10) as sock:
                head = f"POST {path} HTTP/1.1\r\nHost: {url.raw_authority}\r\n{headers}\r\n\r\n"
                sock.sendall(head.encode() + body_start)
        deadline = time.monotonic() + 10
        while stack.gateway.output().count('" 499 ') < len(MID_UPLOAD):
            assert time.monotonic() < deadline, stack.gateway.output()
            time.sleep(0.05)
        log = stack.gateway.output()
        assert log.count("client closed the connection before its answer") == len(MID_UPLOAD)
        assert "Traceback" not in log and "Error handling request" not in log
        assert '" 500 ' not in log
    finally:
        stack.stop()
