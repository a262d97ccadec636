"""The gateway with ``GATEWAY_PROVIDER=oidc`` in front of a real OpenID Connect provider nobody here wrote.

Every piece is its real process on loopback: panva's oidc-provider (``tests/oidc_peer.py``; what it puts where is
listed in ``tests/test_oidc_peer.py``), upstream_demo (whose ``/api/whoami`` echoes the headers it got) and
``python -m gateway``. The browser is an aiohttp client with a cookie jar that signs in through the provider's own
login form. The provider logs each request it answers, so the tests count what the gateway asked of it (userinfo,
refresh grants, revocation).

What the provider does differently from Cognito, and the gateway must cope with: its ID token carries only ``iss, sub,
aud, exp, iat, nonce`` (no ``token_use``, no ``email``, no groups, no ``at_hash``), so the identity comes from
userinfo; its access token is opaque; groups are a ``groups`` claim behind a ``groups`` scope; the redirect back
carries an extra ``iss`` parameter (RFC 9207); sign-out is RP-initiated logout at the discovery document's
``end_session_endpoint`` with a confirmation page; revocation is listed in discovery.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import make_mocked_request
from yarl import URL

from gateway.config import Settings
from gateway.session_backends import CookieBackend
from gateway.session_cookies import SessionCookies
from gateway.user_session import UserSession

from .oidc_peer import OidcPeer, confirm_sign_out, follow_inside, forms_in, sign_in_form, start_oidc_peer
from .stack import HTML, SESSION_SECRET, start_gateway, start_upstream
from .support import CapturedProcess, free_port, new_browser

SCOPES = "openid email profile groups"
ALICE_SUB = "6f1c2b9e-0d3a-4c55-9a61-1b2e3f4a5c6d"  # provider.mjs with opaque subjects: sub is not the login name
BOB_SUB = "a83e51c0-7b2d-4f19-8e6a-5d4c3b2a1f0e"
# The gateways the module's provider knows (each one's callback and "/" are registered with it).
GATEWAYS = ("claims", "defaults", "wrong_secret", "cognito_mode")


@dataclasses.dataclass
class Gateway:
    process: CapturedProcess
    url: str
    env: dict[str, str]

    def stop(self) -> None:
        self.process.stop()


def gateway_env(peer: OidcPeer, port: int, upstream_url: str, **overrides: str) -> dict[str, str]:
    return {
        "GATEWAY_PROVIDER": "oidc",
        "COGNITO_ISSUER": peer.issuer,
        "COGNITO_CLIENT_ID": peer.client_id,
        "COGNITO_CLIENT_SECRET": peer.client_secret,
        "GATEWAY_SCOPES": SCOPES,
        "GATEWAY_UPSTREAM": upstream_url,
        "GATEWAY_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "GATEWAY_LISTEN": f"127.0.0.1:{port}",
        "GATEWAY_SESSION_SECRET": SESSION_SECRET,
        **overrides,
    }


def launch(env: Mapping[str, str]) -> Gateway:
    return Gateway(start_gateway(env), env["GATEWAY_PUBLIC_URL"], dict(env))


def start_peer(ports: Mapping[str, int], **options: Any) -> OidcPeer:
    return start_oidc_peer(
        redirect_uri=" ".join(f"http://127.0.0.1:{port}/cognito_redirect" for port in ports.values()),
        post_logout_redirect_uri=" ".join(f"http://127.0.0.1:{port}/" for port in ports.values()),
        opaque_subjects=True,
        **options,
    )


@pytest.fixture(scope="module")
def ports() -> dict[str, int]:
    return {name: free_port() for name in GATEWAYS}


@pytest.fixture(scope="module")
def peer(ports: dict[str, int]) -> Iterator[OidcPeer]:
    # Its tokens live 300 s, exactly GATEWAY_REFRESH_BEFORE's default (and Keycloak's default lifetime): a gateway
    # that refreshed whenever tokens expire within GATEWAY_REFRESH_BEFORE would refresh, and ask userinfo, on every
    # request. The userinfo counts below catch that.
    running = start_peer(ports)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    process, url = start_upstream()
    yield url
    process.stop()


@pytest.fixture(scope="module")
def gateway(peer: OidcPeer, ports: dict[str, int], upstream: str) -> Iterator[Gateway]:
    """Identity from the claims a generic provider has: preferred_username for the user, groups for the groups."""
    env = gateway_env(
        peer, ports["claims"], upstream, GATEWAY_USER_CLAIM="preferred_username", GATEWAY_GROUPS_CLAIM="groups"
    )
    running = launch(env)
    yield running
    running.stop()


async def discovery(peer: OidcPeer) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(peer.discovery_url) as response:
        return await response.json()


@pytest.fixture
async def metadata(peer: OidcPeer) -> dict[str, Any]:
    return await discovery(peer)


# The browser ----------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class SignIn:
    authorize: URL  # where the gateway sent the browser
    callback: URL  # where the provider sent it back (code, state, iss)
    landed: aiohttp.ClientResponse  # the page the browser ended on


async def get(browser: aiohttp.ClientSession, url: str | URL, **options: Any) -> aiohttp.ClientResponse:
    response = await browser.get(url, allow_redirects=False, **options)
    await response.read()
    return response


async def login_page(browser: aiohttp.ClientSession, gateway: Gateway, path: str) -> tuple[URL, aiohttp.ClientResponse]:
    """Open ``path`` as a navigation; the gateway sends the browser to the provider, which shows a page."""
    response = await get(browser, f"{gateway.url}{path}", headers=HTML)
    assert response.status == 302, (response.status, await response.text())
    authorize = URL(response.headers["Location"])
    return authorize, await follow_inside(browser, await get(browser, authorize))


async def sign_in(
    browser: aiohttp.ClientSession,
    gateway: Gateway,
    username: str = "alice",
    path: str = "/api/whoami",
    *,
    before_callback: Callable[[], Awaitable[None]] | None = None,
) -> SignIn:
    """Through the provider's login form and back, as a person in a browser; ``before_callback`` runs in between."""
    authorize, page = await login_page(browser, gateway, path)
    assert page.status == 200 and forms_in(await page.text()), (page.status, page.url)
    back = await sign_in_form(browser, page, username, f"{username}-password")
    assert back.status == 303, (back.status, await back.text())
    callback = URL(back.headers["Location"])
    if before_callback is not None:
        await before_callback()
    landed = await browser.get(callback, headers=HTML)
    await landed.read()
    return SignIn(authorize, callback, landed)


async def whoami(browser: aiohttp.ClientSession, gateway: Gateway) -> tuple[int, dict[str, str]]:
    async with browser.get(f"{gateway.url}/api/whoami", allow_redirects=False) as response:
        if response.status != 200:
            return response.status, {}
        return 200, dict((await response.json())["headers"])


async def session_of(browser: aiohttp.ClientSession, gateway: Gateway) -> UserSession | None:
    """The gateway session in the browser's cookies, opened with the gateway's own key (the test knows it)."""
    settings = Settings.from_env(gateway.env).session
    name = settings.cookie_name
    pairs = [f"{c.key}={c.value}" for c in browser.cookie_jar if c.key == name or c.key.startswith(f"{name}_")]
    value = SessionCookies(settings).read(make_mocked_request("GET", "/", headers={"Cookie": "; ".join(pairs)}))
    loaded = await CookieBackend(settings).load(value) if value is not None else None
    return loaded.session if loaded is not None else None


async def eventually(count: Callable[[], int], expected: int) -> int:
    """``count()`` once it reaches ``expected`` (the provider's log lines arrive through a pipe), or after 3 s."""
    for _ in range(60):
        if count() >= expected:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.1)  # and a moment more, so that one call too many would show as well
    return count()


async def refresh_grant(peer: OidcPeer, metadata: dict[str, Any], refresh_token: str) -> tuple[int, dict[str, Any]]:
    """The provider's own answer to this refresh token, asked as the gateway's client."""
    headers = {"Authorization": aiohttp.encode_basic_auth(peer.client_id, peer.client_secret)}
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    async with (
        aiohttp.ClientSession() as http,
        http.post(metadata["token_endpoint"], data=form, headers=headers) as response,
    ):
        return response.status, await response.json()


# Sign-in ----------------------------------------------------------------------------------------------------------
async def test_sign_in_through_the_providers_form_lands_on_the_upstream_with_identity_from_userinfo(
    peer: OidcPeer, gateway: Gateway, metadata: dict[str, Any]
) -> None:
    userinfo_calls = lambda: len(peer.requests("GET", metadata["userinfo_endpoint"]))  # noqa: E731
    before = userinfo_calls()
    async with new_browser() as browser:

        async def exactly_one_userinfo_call_by_the_callback() -> None:
            assert await eventually(userinfo_calls, before) == before, "no userinfo before the code exchange"

        signed_in = await sign_in(browser, gateway, before_callback=exactly_one_userinfo_call_by_the_callback)
        assert await eventually(userinfo_calls, before + 1) == before + 1, "one userinfo call per sign-in"
        assert signed_in.authorize.query["client_id"] == peer.client_id
        assert set(signed_in.authorize.query["scope"].split()) == set(SCOPES.split())
        assert signed_in.landed.status == 200 and signed_in.landed.url.path == "/api/whoami"
        headers = dict((await signed_in.landed.json())["headers"])
        assert headers["X-Forwarded-User"] == "alice", "GATEWAY_USER_CLAIM=preferred_username, from userinfo"
        assert headers["X-Forwarded-Email"] == "alice@example.com"
        assert headers["X-Forwarded-Groups"] == "admins", "GATEWAY_GROUPS_CLAIM=groups, from userinfo"
        assert headers["X-Forwarded-Preferred-Username"] == "alice"
        assert headers["X-Amzn-Oidc-Identity"] == ALICE_SUB
        for _ in range(3):
            assert (await whoami(browser, gateway))[0] == 200
        async with browser.get(f"{gateway.url}/oauth2/userinfo") as response:
            body = await response.json()
        assert (body["user"], body["sub"], body["groups"]) == ("alice", ALICE_SUB, ["admins"])
    assert await eventually(userinfo_calls, before + 2) == before + 1, "never a userinfo call per request"


async def test_the_callbacks_iss_parameter_is_the_providers_and_does_not_get_in_the_way(
    peer: OidcPeer, gateway: Gateway
) -> None:
    async with new_browser() as browser:
        signed_in = await sign_in(browser, gateway, path="/")
        assert signed_in.callback.path == "/cognito_redirect"
        assert set(signed_in.callback.query) == {"code", "state", "iss"}
        assert signed_in.callback.query["iss"] == peer.issuer
        assert signed_in.landed.status == 200 and signed_in.landed.url.path == "/"
        assert "Hello, <b id=user>alice</b>" in await signed_in.landed.text()


async def test_bob_has_no_groups_claim_and_gets_no_groups_header(
    peer: OidcPeer, gateway: Gateway, metadata: dict[str, Any]
) -> None:
    userinfo_calls = lambda: len(peer.requests("GET", metadata["userinfo_endpoint"]))  # noqa: E731
    before = userinfo_calls()
    async with new_browser() as browser:
        signed_in = await sign_in(browser, gateway, "bob")
        assert signed_in.landed.status == 200
        headers = dict((await signed_in.landed.json())["headers"])
        assert (headers["X-Forwarded-User"], headers["X-Forwarded-Email"]) == ("bob", "bob@example.com")
        assert headers["X-Amzn-Oidc-Identity"] == BOB_SUB
        assert "X-Forwarded-Groups" not in headers
        status, again = await whoami(browser, gateway)
        assert status == 200 and "X-Forwarded-Groups" not in again
    assert await eventually(userinfo_calls, before + 1) == before + 1


async def test_with_the_default_claims_the_user_is_the_sub(
    peer: OidcPeer, ports: dict[str, int], upstream: str
) -> None:
    """GATEWAY_USER_CLAIM defaults to cognito:username then sub, GATEWAY_GROUPS_CLAIM to cognito:groups, and
    GATEWAY_PROVIDER to oidc for an issuer that is not a Cognito pool."""
    env = gateway_env(peer, ports["defaults"], upstream)
    del env["GATEWAY_PROVIDER"]
    assert Settings.from_env(env).provider.kind == "oidc"
    defaults = launch(env)
    try:
        async with new_browser() as browser:
            signed_in = await sign_in(browser, defaults)
            headers = dict((await signed_in.landed.json())["headers"])
    finally:
        defaults.stop()
    assert headers["X-Forwarded-User"] == ALICE_SUB
    assert headers["X-Forwarded-Email"] == "alice@example.com"
    assert headers["X-Forwarded-Preferred-Username"] == "alice"
    assert "X-Forwarded-Groups" not in headers, "the provider has no cognito:groups"


async def test_claims_the_id_token_has_need_no_userinfo_call(upstream: str) -> None:
    """With conformIdTokenClaims off the provider puts email, groups and preferred_username in the ID token too."""
    port = free_port()
    generous = start_peer({"generous": port}, conform_id_token_claims=False)
    env = gateway_env(generous, port, upstream, GATEWAY_USER_CLAIM="preferred_username", GATEWAY_GROUPS_CLAIM="groups")
    gateway = launch(env)
    try:
        async with new_browser() as browser:
            signed_in = await sign_in(browser, gateway)
            headers = dict((await signed_in.landed.json())["headers"])
        assert (headers["X-Forwarded-User"], headers["X-Forwarded-Groups"]) == ("alice", "admins")
        assert headers["X-Forwarded-Email"] == "alice@example.com"
        assert await eventually(lambda: generous.events("grant authorization_code"), 1) == 1
        userinfo_url = (await discovery(generous))["userinfo_endpoint"]
        assert generous.requests("GET", userinfo_url) == [], "nothing was missing: no userinfo call"
    finally:
        gateway.stop()
        generous.stop()


# Sign-out ---------------------------------------------------------------------------------------------------------
async def test_sign_out_ends_both_sessions_and_revokes_the_refresh_token(
    peer: OidcPeer, gateway: Gateway, metadata: dict[str, Any]
) -> None:
    revocations = lambda: len(peer.requests("POST", metadata["revocation_endpoint"]))  # noqa: E731
    before = revocations()
    async with new_browser() as browser:
        await sign_in(browser, gateway)
        session = await session_of(browser, gateway)
        assert session is not None and session.refresh_token
        assert (await refresh_grant(peer, metadata, session.refresh_token))[0] == 200, "a live refresh token"

        response = await get(browser, f"{gateway.url}/oauth2/sign_out")
        assert response.status == 302
        end_session = URL(response.headers["Location"])
        assert str(end_session.with_query(None)) == metadata["end_session_endpoint"]
        assert dict(end_session.query) == {"client_id": peer.client_id, "post_logout_redirect_uri": f"{gateway.url}/"}
        assert await session_of(browser, gateway) is None, "the session cookie is cleared"
        assert await eventually(revocations, before + 1) == before + 1
        assert peer.requests("POST", metadata["revocation_endpoint"])[-1] == 200
        status, body = await refresh_grant(peer, metadata, session.refresh_token)
        assert (status, body["error"]) == (400, "invalid_grant"), "revoked by the gateway before the provider's logout"

        page = await get(browser, end_session)
        assert page.status == 200, "the provider asks whether to sign out"
        ended = peer.events("end_session")
        done = await confirm_sign_out(browser, page)
        assert (done.status, done.headers["Location"]) == (303, f"{gateway.url}/")
        assert await eventually(lambda: peer.events("end_session"), ended + 1) == ended + 1

        _, page = await login_page(browser, gateway, "/")
        html = await page.text()
        assert page.status == 200 and any(form.password_inputs for form in forms_in(html)), "the password again"
        assert (await whoami(browser, gateway))[0] == 401


# Refresh ----------------------------------------------------------------------------------------------------------
TOKEN_TTL, REFRESH_BEFORE = 6, 2


async def test_refresh_fills_identity_from_userinfo_and_keeps_the_rotated_refresh_token(upstream: str) -> None:
    port = free_port()
    rotating = start_peer({"refresh": port}, token_ttl=TOKEN_TTL, clock_tolerance=0, rotate_refresh_token=True)
    env = gateway_env(
        rotating,
        port,
        upstream,
        GATEWAY_USER_CLAIM="preferred_username",
        GATEWAY_GROUPS_CLAIM="groups",
        GATEWAY_REFRESH_BEFORE=str(REFRESH_BEFORE),
    )
    refreshing = launch(env)
    try:
        await _refresh_twice(rotating, refreshing)
    finally:
        refreshing.stop()
        rotating.stop()


async def _refresh_twice(peer: OidcPeer, gateway: Gateway) -> None:
    userinfo_url = (await discovery(peer))["userinfo_endpoint"]
    userinfo_calls = lambda: len(peer.requests("GET", userinfo_url))  # noqa: E731
    refreshes = lambda: peer.events("grant refresh_token")  # noqa: E731
    async with new_browser() as browser:
        await sign_in(browser, gateway)
        first = await session_of(browser, gateway)
        assert first is not None and first.refresh_token
        assert (await whoami(browser, gateway))[0] == 200
        assert await eventually(userinfo_calls, 1) == 1
        assert refreshes() == 0, "not due yet: no refresh"
        tokens = [first.refresh_token]
        for round_ in (1, 2):
            session = await session_of(browser, gateway)
            assert session is not None
            await asyncio.sleep(max(0.0, session.token_expires_at - REFRESH_BEFORE - time.time()) + 0.5)
            status, headers = await whoami(browser, gateway)
            assert status == 200, f"refresh {round_}: the session goes on"
            assert (headers["X-Forwarded-User"], headers["X-Forwarded-Groups"]) == ("alice", "admins")
            assert headers["X-Forwarded-Email"] == "alice@example.com", "filled in from userinfo after the refresh"
            assert await eventually(refreshes, round_) == round_
            assert await eventually(userinfo_calls, 1 + round_) == 1 + round_, "one userinfo call per refresh"
            refreshed = await session_of(browser, gateway)
            assert refreshed is not None and refreshed.refresh_token not in tokens, "the rotated token is kept"
            assert refreshed.token_expires_at > session.token_expires_at
            tokens.append(refreshed.refresh_token)
        assert (await whoami(browser, gateway))[0] == 200
    assert peer.requests("GET", userinfo_url) == [200, 200, 200]


# Setups that cannot work ------------------------------------------------------------------------------------------
async def test_a_client_id_the_provider_does_not_know_gets_the_providers_error_page(
    peer: OidcPeer, ports: dict[str, int], upstream: str
) -> None:
    stranger = launch(gateway_env(peer, ports["wrong_secret"], upstream, COGNITO_CLIENT_ID="not-registered"))
    try:
        async with new_browser() as browser:
            authorize, page = await login_page(browser, stranger, "/")
    finally:
        stranger.stop()
    assert authorize.query["client_id"] == "not-registered"
    assert page.status == 400 and "invalid_client" in await page.text()
    assert "Traceback" not in stranger.process.output()


async def test_a_wrong_client_secret_gives_a_sign_in_failure_page(
    peer: OidcPeer, ports: dict[str, int], upstream: str
) -> None:
    wrong = launch(gateway_env(peer, ports["wrong_secret"], upstream, COGNITO_CLIENT_SECRET="not-the-secret"))
    try:
        async with new_browser() as browser:
            signed_in = await sign_in(browser, wrong)
    finally:
        wrong.stop()
    assert signed_in.landed.status == 400, signed_in.landed.status
    html = await signed_in.landed.text()
    assert "Sign-in failed" in html and "invalid_client" in html
    assert "Traceback" not in wrong.process.output()


async def test_cognito_mode_refuses_this_providers_tokens_with_a_sign_in_failure_page(
    peer: OidcPeer, ports: dict[str, int], upstream: str
) -> None:
    """GATEWAY_PROVIDER=cognito insists on token_use and on a JWT access token: neither is in OIDC, so 401."""
    env = gateway_env(peer, ports["cognito_mode"], upstream, GATEWAY_PROVIDER="cognito", GATEWAY_SCOPES="openid email")
    cognito = launch(env)
    try:
        async with new_browser() as browser:
            signed_in = await sign_in(browser, cognito)
    finally:
        cognito.stop()
    assert signed_in.landed.status == 401
    assert "could not be verified" in await signed_in.landed.text()
    assert "rejected tokens from the IdP" in cognito.process.output()


async def test_another_issuer_keeps_the_gateway_not_ready_and_sign_in_unavailable(
    peer: OidcPeer, ports: dict[str, int], upstream: str
) -> None:
    """The same provider under another name (localhost, not 127.0.0.1): discovery names an issuer we did not expect."""
    other_name = str(URL(peer.issuer).with_host("localhost"))
    wrong = launch(gateway_env(peer, ports["wrong_secret"], upstream, COGNITO_ISSUER=other_name))
    try:
        async with new_browser() as browser:
            response = await get(browser, f"{wrong.url}/", headers=HTML)
            assert response.status == 503
            assert "Sign-in is unavailable" in await response.text()
            async with browser.get(f"{wrong.url}/oauth2/readyz") as response:
                assert response.status == 503, "not ready with an issuer the provider does not have"
                assert "discovery names issuer" in await response.text()
    finally:
        wrong.stop()


async def test_an_issuer_with_a_trailing_slash_is_used_as_written(upstream: str) -> None:
    """OIDC Core 3.1.3.7 step 2: iss must match the issuer exactly; Auth0's, for one, ends in "/"."""
    port = free_port()
    slashed = start_peer({"slash": port}, issuer_trailing_slash=True)
    gateway = launch(gateway_env(slashed, port, upstream, GATEWAY_USER_CLAIM="preferred_username"))
    try:
        assert slashed.issuer.endswith("/")
        async with new_browser() as browser:
            signed_in = await sign_in(browser, gateway)
            assert signed_in.landed.status == 200, await signed_in.landed.text()
            headers = dict((await signed_in.landed.json())["headers"])
        assert headers["X-Forwarded-User"] == "alice"
    finally:
        gateway.stop()
        slashed.stop()
