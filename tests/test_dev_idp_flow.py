"""dev_idp over real HTTP: the code flow with PKCE as a relying party and a browser drive it."""

from __future__ import annotations

import re

import aiohttp
import jwt
from yarl import URL

from .conftest import CLIENT_SECRET, InProcessIdp
from .support import AuthorizeAttempt, jwt_segments, submit_form

BASIC = {"Authorization": aiohttp.encode_basic_auth("gateway", CLIENT_SECRET)}


async def sign_in(
    browser: aiohttp.ClientSession,
    idp: InProcessIdp,
    attempt: AuthorizeAttempt,
    *,
    username: str = "alice",
    password: str = "alice-password",
    scope: str = "openid email profile",
) -> str:
    """Authorize, fill in the login form, and return the code from the redirect to the app."""
    query = attempt.query("gateway", idp.redirect_uri(), scope)
    async with browser.get(f"{idp.url}/oauth2/authorize", params=query, allow_redirects=False) as response:
        assert response.status == 302
        login_url = str(URL(idp.url).join(URL(response.headers["Location"])))
    assert URL(login_url).path == "/login"
    response = await submit_form(browser, login_url, {"username": username, "password": password})
    assert response.status == 302, await response.text()
    location = URL(response.headers["Location"])
    assert str(location.with_query(None)) == idp.redirect_uri()
    assert location.query["state"] == attempt.state
    return location.query["code"]


async def exchange(
    browser: aiohttp.ClientSession, idp: InProcessIdp, code: str, verifier: str, **extra: str
) -> aiohttp.ClientResponse:
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": idp.redirect_uri(),
        "code_verifier": verifier,
        **extra,
    }
    headers = None if "client_secret" in extra else BASIC
    response = await browser.post(f"{idp.url}/oauth2/token", data=data, headers=headers)
    await response.read()
    return response


async def verify(browser: aiohttp.ClientSession, idp: InProcessIdp, token: str) -> dict:
    async with browser.get(f"{idp.issuer}/.well-known/jwks.json") as response:
        keys = jwt.PyJWKSet.from_dict(await response.json())
    header = jwt.get_unverified_header(token)
    key = next(k for k in keys.keys if k.key_id == header["kid"])
    return jwt.decode(token, key.key, algorithms=["RS256"], issuer=idp.issuer, options={"verify_aud": False})


async def test_discovery_document_has_cognito_shape(idp: InProcessIdp, browser: aiohttp.ClientSession) -> None:
    async with browser.get(f"{idp.issuer}/.well-known/openid-configuration") as response:
        assert response.status == 200
        text = await response.text()
        document = await response.json()
    assert list(document) == sorted(document), "Cognito prints the keys alphabetically"
    assert document["issuer"] == idp.issuer
    assert document["authorization_endpoint"] == f"{idp.url}/oauth2/authorize"
    assert document["token_endpoint"] == f"{idp.url}/oauth2/token"
    assert document["userinfo_endpoint"] == f"{idp.url}/oauth2/userInfo"
    assert document["end_session_endpoint"] == f"{idp.url}/logout"
    assert document["revocation_endpoint"] == f"{idp.url}/oauth2/revoke"
    assert document["jwks_uri"] == f"{idp.issuer}/.well-known/jwks.json"
    assert document["token_endpoint_auth_methods_supported"] == ["client_secret_basic", "client_secret_post"]
    assert "code_challenge_methods_supported" not in text  # Cognito does not advertise PKCE


async def test_jwks_has_two_rs256_keys_with_base64_kids(idp: InProcessIdp, browser: aiohttp.ClientSession) -> None:
    async with browser.get(f"{idp.issuer}/.well-known/jwks.json") as response:
        keys = (await response.json())["keys"]
    assert len(keys) == 2
    assert keys[0]["kid"] != keys[1]["kid"]
    for key in keys:
        assert set(key) == {"alg", "e", "kid", "kty", "n", "use"}
        assert (key["alg"], key["kty"], key["use"], key["e"]) == ("RS256", "RSA", "sig", "AQAB")
        assert re.fullmatch(r"[A-Za-z0-9+/]{43}=", key["kid"])


async def test_unknown_pool_id_is_404(idp: InProcessIdp, browser: aiohttp.ClientSession) -> None:
    async with browser.get(f"{idp.url}/local_other/.well-known/jwks.json") as response:
        assert response.status == 404


async def test_code_flow_issues_cognito_shaped_tokens(idp: InProcessIdp, browser: aiohttp.ClientSession) -> None:
    attempt = AuthorizeAttempt.new()
    code = await sign_in(browser, idp, attempt)
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", code)
    response = await exchange(browser, idp, code, attempt.verifier)
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/json;charset=UTF-8"
    body = await response.json()
    assert set(body) == {"id_token", "access_token", "refresh_token", "expires_in", "token_type"}
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600

    id_header, id_claims, id_text = jwt_segments(body["id_token"])
    access_header, access_claims, _ = jwt_segments(body["access_token"])
    assert set(id_header) == {"kid", "alg"} and id_header["alg"] == "RS256"
    assert id_header["kid"] != access_header["kid"], "ID and access tokens are signed with different keys"
    assert "https:\\/\\/" in id_text or "http:\\/\\/" in id_text, "Cognito escapes / as \\/"

    id_claims = await verify(browser, idp, body["id_token"])
    assert id_claims["aud"] == "gateway" and id_claims["token_use"] == "id"
    assert id_claims["iss"] == idp.issuer
    assert id_claims["cognito:username"] == "alice" and id_claims["email"] == "alice@example.com"
    assert id_claims["email_verified"] is True
    assert id_claims["cognito:groups"] == ["admins"]
    assert id_claims["nonce"] == attempt.nonce
    for name in ("sub", "at_hash", "jti", "origin_jti", "event_id"):
        assert isinstance(id_claims[name], str) and id_claims[name]
    for name in ("auth_time", "iat", "exp"):
        assert isinstance(id_claims[name], int)
    assert id_claims["exp"] - id_claims["iat"] == 3600

    access_claims = await verify(browser, idp, body["access_token"])
    assert "aud" not in access_claims
    assert access_claims["client_id"] == "gateway" and access_claims["token_use"] == "access"
    assert access_claims["scope"] == "openid email profile"
    assert access_claims["username"] == "alice" and access_claims["version"] == 2
    assert access_claims["origin_jti"] == id_claims["origin_jti"]
    assert "email" not in access_claims

    refresh = body["refresh_token"]
    assert refresh.count(".") == 4 and 1650 <= len(refresh) <= 1850
    assert 900 <= len(body["id_token"]) <= 1500 and 900 <= len(body["access_token"]) <= 1400


async def test_user_without_groups_has_no_groups_claim(idp: InProcessIdp, browser: aiohttp.ClientSession) -> None:
    attempt = AuthorizeAttempt.new()
    code = await sign_in(browser, idp, attempt, username="bob", password="bob-password")
    body = await (await exchange(browser, idp, code, attempt.verifier)).json()
    claims = await verify(browser, idp, body["id_token"])
    assert claims["cognito:username"] == "bob"
    assert "cognito:groups" not in claims


async def test_client_secret_post_is_accepted(idp: InProcessIdp, browser: aiohttp.ClientSession) -> None:
    attempt = AuthorizeAttempt.new()
    code = await sign_in(browser, idp, attempt)
    response = await exchange(browser, idp, code, attempt.verifier, client_id="gateway", client_secret=CLIENT_SECRET)
    assert response.status == 200


async def test_hosted_ui_session_signs_in_again_without_the_form(
    idp: InProcessIdp, browser: aiohttp.ClientSession
) -> None:
    await sign_in(browser, idp, AuthorizeAttempt.new())
    second = AuthorizeAttempt.new()
    query = second.query("gateway", idp.redirect_uri())
    async with browser.get(f"{idp.url}/oauth2/authorize", params=query, allow_redirects=False) as response:
        location = URL(response.headers["Location"])
    assert str(location.with_query(None)) == idp.redirect_uri()
    assert location.query["state"] == second.state and "code" in location.query

    idp.clock.advance(3601)  # Cognito's hosted-UI session lasts one hour
    async with browser.get(f"{idp.url}/oauth2/authorize", params=query, allow_redirects=False) as response:
        assert URL(response.headers["Location"]).path == "/login"


async def test_refresh_returns_new_tokens_but_no_refresh_token(
    idp: InProcessIdp, browser: aiohttp.ClientSession
) -> None:
    attempt = AuthorizeAttempt.new()
    code = await sign_in(browser, idp, attempt)
    first = await (await exchange(browser, idp, code, attempt.verifier)).json()
    idp.clock.advance(120)
    response = await browser.post(
        f"{idp.url}/oauth2/token",
        headers=BASIC,
        data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
    )
    assert response.status == 200
    body = await response.json()
    assert set(body) == {"id_token", "access_token", "expires_in", "token_type"}
    old, new = jwt_segments(first["id_token"])[1], jwt_segments(body["id_token"])[1]
    assert new["auth_time"] == old["auth_time"], "auth_time stays at the original sign-in"
    assert new["iat"] == old["iat"] + 120
    assert "nonce" not in new


async def test_userinfo_returns_string_booleans(idp: InProcessIdp, browser: aiohttp.ClientSession) -> None:
    attempt = AuthorizeAttempt.new()
    code = await sign_in(browser, idp, attempt)
    tokens = await (await exchange(browser, idp, code, attempt.verifier)).json()
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    async with browser.get(f"{idp.url}/oauth2/userInfo", headers=headers) as response:
        assert response.status == 200
        body = await response.json()
    assert body["email_verified"] == "true"
    assert body["username"] == "alice" and body["email"] == "alice@example.com"
    assert all(isinstance(value, str) for value in body.values())


async def test_logout_ends_the_hosted_ui_session(idp: InProcessIdp, browser: aiohttp.ClientSession) -> None:
    await sign_in(browser, idp, AuthorizeAttempt.new())
    logout = {"client_id": "gateway", "logout_uri": "http://localhost:8000/"}
    async with browser.get(f"{idp.url}/logout", params=logout, allow_redirects=False) as response:
        assert response.status == 302
        assert response.headers["Location"] == "http://localhost:8000/"
    query = AuthorizeAttempt.new().query("gateway", idp.redirect_uri())
    async with browser.get(f"{idp.url}/oauth2/authorize", params=query, allow_redirects=False) as response:
        assert URL(response.headers["Location"]).path == "/login", "the next sign-in shows the form again"


async def test_logout_with_redirect_uri_goes_to_sign_in(idp: InProcessIdp, browser: aiohttp.ClientSession) -> None:
    params = {"client_id": "gateway", "redirect_uri": idp.redirect_uri(), "response_type": "code", "state": "s1"}
    async with browser.get(f"{idp.url}/logout", params=params, allow_redirects=False) as response:
        location = URL(response.headers["Location"])
    assert location.path == "/login" and location.query["state"] == "s1"
