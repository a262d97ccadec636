"""The OIDC peer (panva's oidc-provider 9.13.3, tests/oidc_peer.py) driven as a relying party, without the gateway.

These tests prove the harness works, and they pin down what this certified provider does where providers differ, so
the gateway can be made to work with it. With the harness's defaults (``conform_id_token_claims=True``, rotation left
to oidc-provider, scope ``openid email profile groups``):

- **ID token** from the code exchange and from a refresh: exactly ``iss, sub, aud, exp, iat, nonce``. No ``email``,
  ``groups``, ``name``, no ``at_hash`` (the token endpoint is not required to add it and does not), no ``sid`` or
  ``auth_time`` (neither was asked for). ``aud`` is the client_id as a string. ``exp - iat`` is ``token_ttl``.
  A refreshed ID token keeps the original ``nonce``.
- **userinfo** (GET with ``Authorization: Bearer <access token>``): ``sub, email, email_verified, name,
  preferred_username, groups`` for alice; bob has no ``groups`` member at all. So a relying party that wants email or
  groups must call userinfo. With ``conform_id_token_claims=False`` the ID token carries them too.
- **Signing**: RS256 only (``id_token_signing_alg_values_supported == ["RS256"]``), a fresh 2048-bit key per process,
  its ``kid`` in the JWKS at ``jwks_uri`` (``/jwks``, not ``/.well-known/jwks.json``).
- **Token response**: ``access_token`` (opaque, 43 characters, not a JWT), ``expires_in`` (= ``token_ttl``),
  ``id_token``, ``refresh_token``, ``scope`` and ``token_type`` spelled ``"Bearer"``.
- **Redirect to redirect_uri**: ``code``, ``state`` and ``iss`` (RFC 9207; discovery has
  ``authorization_response_iss_parameter_supported: true``). An error comes back the same way with ``error``.
- **PKCE**: required (an authorize request without ``code_challenge`` is redirected back with
  ``error=invalid_request``); only ``S256`` is offered.
- **Refresh**: a refresh token comes with every code exchange (``issueRefreshToken`` is configured to always issue
  one, so no ``offline_access`` scope or ``prompt=consent`` is needed). By default the refresh_token grant returns the
  *same* refresh token (no rotation for a confidential client until 70 % of its 24 h lifetime has passed); with
  ``rotate_refresh_token=True`` it returns a new one, and presenting the old one again fails with ``invalid_grant``.
- **Expiry**: the provider accepts its own tokens up to 15 s past ``exp`` (oidc-provider's ``clockTolerance``);
  with ``clock_tolerance=0`` an access token fails at userinfo (401) once ``token_ttl`` has passed, and the refresh
  token (24 h) still works.
- **Revocation** (client_secret_basic, answers 200 with an empty body): revoking *either* token revokes every token
  of that grant: after revoking the access token, userinfo answers 401 *and* the refresh token gets
  ``invalid_grant``; after revoking the refresh token, the access token fails at userinfo too.
- **RP-initiated logout**: GET ``end_session_endpoint`` with ``id_token_hint`` *or* with ``client_id`` alone (no
  hint needed), plus ``post_logout_redirect_uri`` (registered) and optionally ``state``. The provider answers 200 with a
  confirmation page; the client must POST ``xsrf=<hidden field>&logout=yes`` to ``/session/end/confirm`` with the
  provider's cookies (``tests.oidc_peer.confirm_sign_out`` does). The answer is a 303 to
  ``post_logout_redirect_uri?state=…``. Signing out also revokes the grant: the refresh token then gets
  ``invalid_grant``. Without a provider session the endpoint answers with an auto-submitting form of the same fields.
- **Sign-in**: one login form (fields ``login`` and ``password``), password checked by provider.mjs; no consent page
  (``loadExistingGrant`` grants this first-party client what it asks for). A second authorize request in the same
  browser session goes straight back to redirect_uri with a new code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import aiohttp
import jwt
import pytest
from yarl import URL

from .oidc_peer import OidcPeer, confirm_sign_out, follow_inside, sign_in_form, start_oidc_peer
from .support import AuthorizeAttempt, jwt_segments

# Never contacted: the tests read the code (and the end of a sign-out) from the Location header.
REDIRECT_URI = "http://127.0.0.1:8000/cognito_redirect"
POST_LOGOUT_REDIRECT_URI = "http://127.0.0.1:8000/goodbye"
SCOPE = "openid email profile groups"
TOKEN_TTL = 120
PROTOCOL_CLAIMS = {"iss", "sub", "aud", "exp", "iat", "nonce"}


def start(**options: Any) -> OidcPeer:
    options.setdefault("token_ttl", TOKEN_TTL)
    return start_oidc_peer(redirect_uri=REDIRECT_URI, post_logout_redirect_uri=POST_LOGOUT_REDIRECT_URI, **options)


@pytest.fixture(scope="module")
def peer() -> Iterator[OidcPeer]:
    """One provider with the harness's defaults for the tests that only sign in and out (each in its own browser)."""
    running = start()
    yield running
    running.stop()


async def discovery(browser: aiohttp.ClientSession, peer: OidcPeer) -> dict[str, Any]:
    async with browser.get(peer.discovery_url) as response:
        assert response.status == 200
        return await response.json()


async def authorize(
    browser: aiohttp.ClientSession, peer: OidcPeer, attempt: AuthorizeAttempt, **extra: str
) -> aiohttp.ClientResponse:
    """The authorization request, redirects followed inside the provider: the login page, or the way back out."""
    metadata = await discovery(browser, peer)
    query = {**attempt.query(peer.client_id, peer.redirect_uri, SCOPE), **extra}
    response = await browser.get(metadata["authorization_endpoint"], params=query, allow_redirects=False)
    await response.read()
    return await follow_inside(browser, response)


def code_from(peer: OidcPeer, response: aiohttp.ClientResponse, attempt: AuthorizeAttempt) -> str:
    assert response.status == 303, (response.status, response.headers.get("Location"))
    location = URL(response.headers["Location"])
    assert str(location.with_query(None)) == peer.redirect_uri
    assert location.query["state"] == attempt.state
    assert location.query["iss"] == peer.issuer
    return location.query["code"]


async def sign_in(
    browser: aiohttp.ClientSession,
    peer: OidcPeer,
    attempt: AuthorizeAttempt,
    username: str = "alice",
    password: str | None = None,
) -> str:
    """Authorize, fill in the login form, and return the code from the redirect to redirect_uri."""
    page = await authorize(browser, peer, attempt)
    assert page.status == 200, (page.status, page.headers.get("Location"))
    response = await sign_in_form(browser, page, username, password or f"{username}-password")
    return code_from(peer, response, attempt)


async def token_request(
    browser: aiohttp.ClientSession, peer: OidcPeer, endpoint: str, **data: str
) -> tuple[int, dict[str, Any]]:
    """POST to the token or revocation endpoint with client_secret_basic."""
    metadata = await discovery(browser, peer)
    headers = {"Authorization": aiohttp.encode_basic_auth(peer.client_id, peer.client_secret)}
    async with browser.post(metadata[endpoint], data=data, headers=headers) as response:
        body = await response.read()
        return response.status, (await response.json() if body else {})


async def signed_in_tokens(
    browser: aiohttp.ClientSession, peer: OidcPeer, username: str = "alice"
) -> tuple[AuthorizeAttempt, dict[str, Any]]:
    attempt = AuthorizeAttempt.new()
    code = await sign_in(browser, peer, attempt, username)
    status, tokens = await token_request(
        browser,
        peer,
        "token_endpoint",
        grant_type="authorization_code",
        code=code,
        redirect_uri=peer.redirect_uri,
        code_verifier=attempt.verifier,
    )
    assert status == 200, tokens
    return attempt, tokens


async def verify_id_token(browser: aiohttp.ClientSession, peer: OidcPeer, token: str, nonce: str) -> dict[str, Any]:
    """Verify as a relying party must: key from the JWKS by kid, alg from our allowlist, iss, aud, exp, nonce."""
    metadata = await discovery(browser, peer)
    async with browser.get(metadata["jwks_uri"]) as response:
        keys = jwt.PyJWKSet.from_dict(await response.json())
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in keys.keys if k.key_id == kid)
    claims = jwt.decode(
        token,
        key,
        algorithms=["RS256"],
        audience=peer.client_id,
        issuer=peer.issuer,
        options={"require": ["exp", "iat", "iss", "aud", "sub", "nonce"]},
    )
    assert claims["nonce"] == nonce
    return claims


async def userinfo(browser: aiohttp.ClientSession, peer: OidcPeer, access_token: str) -> tuple[int, dict[str, Any]]:
    metadata = await discovery(browser, peer)
    headers = {"Authorization": f"Bearer {access_token}"}
    async with browser.get(metadata["userinfo_endpoint"], headers=headers) as response:
        return response.status, (await response.json() if response.status == 200 else {})


async def test_discovery_has_every_field_the_gateway_reads(browser: aiohttp.ClientSession, peer: OidcPeer) -> None:
    metadata = await discovery(browser, peer)
    assert metadata["issuer"] == peer.issuer
    assert not peer.issuer.endswith("/")
    for endpoint in (
        "authorization_endpoint",
        "token_endpoint",
        "jwks_uri",
        "userinfo_endpoint",
        "end_session_endpoint",
        "revocation_endpoint",
    ):
        assert metadata[endpoint].startswith(f"{peer.issuer}/"), endpoint
    assert metadata["id_token_signing_alg_values_supported"] == ["RS256"]
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert "client_secret_basic" in metadata["token_endpoint_auth_methods_supported"]
    assert {"openid", "email", "profile", "groups"} <= set(metadata["scopes_supported"])
    assert metadata["authorization_response_iss_parameter_supported"] is True


async def test_code_flow_gives_a_verified_id_token_an_opaque_access_token_and_a_refresh_token(
    browser: aiohttp.ClientSession, peer: OidcPeer
) -> None:
    attempt, tokens = await signed_in_tokens(browser, peer)
    assert set(tokens) == {"access_token", "expires_in", "id_token", "refresh_token", "scope", "token_type"}
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == TOKEN_TTL
    assert set(tokens["scope"].split()) == set(SCOPE.split())
    assert len(tokens["access_token"]) == 43 and "." not in tokens["access_token"], "opaque, not a JWT"
    claims = await verify_id_token(browser, peer, tokens["id_token"], attempt.nonce)
    assert set(claims) == PROTOCOL_CLAIMS, "conformIdTokenClaims: scope claims are only at userinfo"
    assert claims["sub"] == "alice"
    assert claims["aud"] == peer.client_id
    assert claims["exp"] - claims["iat"] == TOKEN_TTL
    header, _, _ = jwt_segments(tokens["id_token"])
    assert header["alg"] == "RS256"


async def test_userinfo_fills_in_the_claims_the_id_token_lacks(browser: aiohttp.ClientSession, peer: OidcPeer) -> None:
    _, tokens = await signed_in_tokens(browser, peer)
    status, claims = await userinfo(browser, peer, tokens["access_token"])
    assert status == 200
    assert claims == {
        "sub": "alice",
        "email": "alice@example.com",
        "email_verified": True,
        "name": "Alice Example",
        "preferred_username": "alice",
        "groups": ["admins"],
    }


async def test_bob_has_no_groups_claim_at_all(browser: aiohttp.ClientSession, peer: OidcPeer) -> None:
    _, tokens = await signed_in_tokens(browser, peer, "bob")
    status, claims = await userinfo(browser, peer, tokens["access_token"])
    assert status == 200
    assert claims["email"] == "bob@example.com"
    assert "groups" not in claims


async def test_a_wrong_password_shows_the_login_form_again(browser: aiohttp.ClientSession, peer: OidcPeer) -> None:
    page = await authorize(browser, peer, AuthorizeAttempt.new())
    response = await sign_in_form(browser, page, "alice", "not-her-password")
    assert response.status == 401
    assert "Incorrect username or password." in await response.text()
    again = await sign_in_form(browser, response, "alice", "alice-password")
    assert URL(again.headers["Location"]).query["code"]


async def test_pkce_is_required_and_checked(browser: aiohttp.ClientSession, peer: OidcPeer) -> None:
    metadata = await discovery(browser, peer)
    attempt = AuthorizeAttempt.new()
    query = {
        k: v for k, v in attempt.query(peer.client_id, peer.redirect_uri, SCOPE).items() if "code_challenge" not in k
    }
    async with browser.get(metadata["authorization_endpoint"], params=query, allow_redirects=False) as response:
        assert response.status == 303
        refused = URL(response.headers["Location"])
    assert refused.query["error"] == "invalid_request"
    assert refused.query["state"] == attempt.state

    code = await sign_in(browser, peer, attempt)
    status, body = await token_request(
        browser,
        peer,
        "token_endpoint",
        grant_type="authorization_code",
        code=code,
        redirect_uri=peer.redirect_uri,
        code_verifier=AuthorizeAttempt.new().verifier,
    )
    assert (status, body["error"]) == (400, "invalid_grant")


async def test_a_second_authorize_in_the_same_browser_skips_the_login_form(
    browser: aiohttp.ClientSession, peer: OidcPeer
) -> None:
    await sign_in(browser, peer, AuthorizeAttempt.new())
    attempt = AuthorizeAttempt.new()
    assert code_from(peer, await authorize(browser, peer, attempt), attempt)


async def test_prompt_consent_brings_a_consent_page_that_sign_in_form_answers(
    browser: aiohttp.ClientSession, peer: OidcPeer
) -> None:
    attempt = AuthorizeAttempt.new()
    page = await authorize(browser, peer, attempt, prompt="consent")
    response = await sign_in_form(browser, page, "alice", "alice-password")
    assert code_from(peer, response, attempt)


async def test_refresh_returns_new_tokens_and_by_default_the_same_refresh_token(
    browser: aiohttp.ClientSession, peer: OidcPeer
) -> None:
    attempt, tokens = await signed_in_tokens(browser, peer)
    status, refreshed = await token_request(
        browser, peer, "token_endpoint", grant_type="refresh_token", refresh_token=tokens["refresh_token"]
    )
    assert status == 200, refreshed
    assert refreshed["token_type"] == "Bearer"
    assert refreshed["access_token"] != tokens["access_token"]
    assert refreshed["refresh_token"] == tokens["refresh_token"], "not rotated for a confidential client"
    claims = await verify_id_token(browser, peer, refreshed["id_token"], attempt.nonce)
    assert set(claims) == PROTOCOL_CLAIMS
    assert (await userinfo(browser, peer, refreshed["access_token"]))[0] == 200


async def test_with_rotation_the_old_refresh_token_is_refused(browser: aiohttp.ClientSession) -> None:
    rotating = start(rotate_refresh_token=True)
    try:
        _, tokens = await signed_in_tokens(browser, rotating)
        old = tokens["refresh_token"]
        status, refreshed = await token_request(
            browser, rotating, "token_endpoint", grant_type="refresh_token", refresh_token=old
        )
        assert status == 200
        assert refreshed["refresh_token"] != old
        status, body = await token_request(
            browser, rotating, "token_endpoint", grant_type="refresh_token", refresh_token=old
        )
        assert (status, body["error"]) == (400, "invalid_grant")
    finally:
        rotating.stop()


async def test_without_conformance_the_id_token_carries_the_scope_claims(browser: aiohttp.ClientSession) -> None:
    plain = start(conform_id_token_claims=False)
    try:
        attempt, tokens = await signed_in_tokens(browser, plain)
        claims = await verify_id_token(browser, plain, tokens["id_token"], attempt.nonce)
    finally:
        plain.stop()
    assert claims["email"] == "alice@example.com"
    assert claims["groups"] == ["admins"]
    assert set(claims) == PROTOCOL_CLAIMS | {"email", "email_verified", "name", "preferred_username", "groups"}


async def test_a_short_token_ttl_expires_the_access_token_but_not_the_refresh_token(
    browser: aiohttp.ClientSession,
) -> None:
    short = start(token_ttl=1, clock_tolerance=0)
    try:
        _, tokens = await signed_in_tokens(browser, short)
        assert tokens["expires_in"] == 1
        await asyncio.sleep(2.1)
        status, _ = await userinfo(browser, short, tokens["access_token"])
        assert status == 401
        status, refreshed = await token_request(
            browser, short, "token_endpoint", grant_type="refresh_token", refresh_token=tokens["refresh_token"]
        )
        assert status == 200
        assert (await userinfo(browser, short, refreshed["access_token"]))[0] == 200
    finally:
        short.stop()


async def test_revoking_the_access_token_revokes_its_refresh_token_too(
    browser: aiohttp.ClientSession, peer: OidcPeer
) -> None:
    _, tokens = await signed_in_tokens(browser, peer)
    status, body = await token_request(
        browser, peer, "revocation_endpoint", token=tokens["access_token"], token_type_hint="access_token"
    )
    assert (status, body) == (200, {})
    assert (await userinfo(browser, peer, tokens["access_token"]))[0] == 401
    status, body = await token_request(
        browser, peer, "token_endpoint", grant_type="refresh_token", refresh_token=tokens["refresh_token"]
    )
    assert (status, body["error"]) == (400, "invalid_grant")


async def test_revoking_the_refresh_token_ends_the_whole_grant(browser: aiohttp.ClientSession, peer: OidcPeer) -> None:
    _, tokens = await signed_in_tokens(browser, peer)
    status, body = await token_request(
        browser, peer, "revocation_endpoint", token=tokens["refresh_token"], token_type_hint="refresh_token"
    )
    assert (status, body) == (200, {})
    status, body = await token_request(
        browser, peer, "token_endpoint", grant_type="refresh_token", refresh_token=tokens["refresh_token"]
    )
    assert (status, body["error"]) == (400, "invalid_grant")
    assert (await userinfo(browser, peer, tokens["access_token"]))[0] == 401


async def end_session(browser: aiohttp.ClientSession, peer: OidcPeer, **params: str) -> aiohttp.ClientResponse:
    metadata = await discovery(browser, peer)
    page = await browser.get(metadata["end_session_endpoint"], params=params, allow_redirects=False)
    await page.read()
    assert page.status == 200, page.status
    return page


async def test_logout_with_id_token_hint_ends_at_the_post_logout_redirect_uri(
    browser: aiohttp.ClientSession, peer: OidcPeer
) -> None:
    _, tokens = await signed_in_tokens(browser, peer)
    page = await end_session(
        browser,
        peer,
        id_token_hint=tokens["id_token"],
        post_logout_redirect_uri=POST_LOGOUT_REDIRECT_URI,
        state="after-logout",
    )
    assert 'name="xsrf"' in await page.text()
    response = await confirm_sign_out(browser, page)
    assert response.status == 303
    assert response.headers["Location"] == f"{POST_LOGOUT_REDIRECT_URI}?state=after-logout"
    status, body = await token_request(
        browser, peer, "token_endpoint", grant_type="refresh_token", refresh_token=tokens["refresh_token"]
    )
    assert (status, body["error"]) == (400, "invalid_grant"), "signing out revokes the grant"
    assert (await authorize(browser, peer, AuthorizeAttempt.new())).status == 200, "the login form again"


async def test_logout_with_client_id_and_no_id_token_hint(browser: aiohttp.ClientSession, peer: OidcPeer) -> None:
    await signed_in_tokens(browser, peer)
    page = await end_session(browser, peer, client_id=peer.client_id, post_logout_redirect_uri=POST_LOGOUT_REDIRECT_URI)
    response = await confirm_sign_out(browser, page)
    assert response.status == 303
    assert response.headers["Location"] == POST_LOGOUT_REDIRECT_URI

    # Signed out already: no confirmation page, an auto-submitting form of the same fields.
    page = await end_session(browser, peer, client_id=peer.client_id, post_logout_redirect_uri=POST_LOGOUT_REDIRECT_URI)
    assert "document.forms[0].submit()" in await page.text()
    response = await confirm_sign_out(browser, page)
    assert (response.status, response.headers["Location"]) == (303, POST_LOGOUT_REDIRECT_URI)


async def test_an_unregistered_post_logout_redirect_uri_is_refused(
    browser: aiohttp.ClientSession, peer: OidcPeer
) -> None:
    metadata = await discovery(browser, peer)
    params = {"client_id": peer.client_id, "post_logout_redirect_uri": "http://127.0.0.1:8000/elsewhere"}
    async with browser.get(metadata["end_session_endpoint"], params=params, allow_redirects=False) as response:
        assert response.status == 400
        assert "post_logout_redirect_uri not registered" in await response.text()


async def test_opaque_subjects_and_a_trailing_slash_issuer(browser: aiohttp.ClientSession) -> None:
    """Two harness options: sub is a UUID (not the login name), and the issuer ends in "/" (as Auth0's does)."""
    odd = start(opaque_subjects=True, issuer_trailing_slash=True)
    try:
        assert odd.issuer.endswith("/") and not odd.discovery_url.startswith(f"{odd.issuer}/")
        assert (await discovery(browser, odd))["issuer"] == odd.issuer
        attempt = AuthorizeAttempt.new()
        page = await authorize(browser, odd, attempt)
        response = await sign_in_form(browser, page, "alice", "alice-password")
        location = URL(response.headers["Location"])
        assert location.query["iss"] == odd.issuer
        status, tokens = await token_request(
            browser,
            odd,
            "token_endpoint",
            grant_type="authorization_code",
            code=location.query["code"],
            redirect_uri=odd.redirect_uri,
            code_verifier=attempt.verifier,
        )
        assert status == 200, tokens
        claims = await verify_id_token(browser, odd, tokens["id_token"], attempt.nonce)
        assert claims["iss"] == odd.issuer
        assert claims["sub"] == "6f1c2b9e-0d3a-4c55-9a61-1b2e3f4a5c6d"
        status, info = await userinfo(browser, odd, tokens["access_token"])
        assert (status, info["sub"], info["preferred_username"]) == (200, claims["sub"], "alice")
    finally:
        odd.stop()


async def test_the_provider_logs_every_request_and_grant(browser: aiohttp.ClientSession, peer: OidcPeer) -> None:
    metadata = await discovery(browser, peer)
    before = len(peer.requests("GET", metadata["userinfo_endpoint"]))
    refreshes, revoked = peer.events("grant refresh_token"), peer.events("grant revoked")
    _, tokens = await signed_in_tokens(browser, peer)
    await userinfo(browser, peer, tokens["access_token"])
    await token_request(
        browser, peer, "token_endpoint", grant_type="refresh_token", refresh_token=tokens["refresh_token"]
    )
    await token_request(browser, peer, "revocation_endpoint", token=tokens["refresh_token"])
    await userinfo(browser, peer, tokens["access_token"])
    await asyncio.sleep(0.2)  # the lines are read from the provider's stdout by a thread
    assert peer.requests("GET", metadata["userinfo_endpoint"])[before:] == [200, 401]
    assert peer.events("grant refresh_token") == refreshes + 1
    assert peer.events("grant revoked") == revoked + 1
