"""dev_idp's machine clients over real HTTP: the client_credentials grant with resource-server scopes, as Cognito has it."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from dev_idp.directory import DirectoryError, load_directory, parse_directory

from .conftest import InProcessIdp
from .support import ROOT, AuthorizeAttempt, jwt_segments, start_dev_idp, write_json
from .test_dev_idp_errors import authorize, token_error
from .test_dev_idp_flow import BASIC, exchange, sign_in, verify

BOT_SECRET = "reports-bot-dev-secret-for-local-use-only"
BOT_BASIC = {"Authorization": aiohttp.encode_basic_auth("reports-bot", BOT_SECRET)}
ADMIN = {"Authorization": "Bearer admin-token-for-tests"}
# Cognito's machine-to-machine access token: no username, no groups, no origin_jti or event_id.
MACHINE_CLAIMS = {"sub", "token_use", "scope", "auth_time", "iss", "exp", "iat", "version", "jti", "client_id"}


async def token_request(
    browser: aiohttp.ClientSession, idp: InProcessIdp, data: dict[str, str], headers: dict[str, str] | None = None
) -> aiohttp.ClientResponse:
    response = await browser.post(f"{idp.url}/oauth2/token", data=data, headers=headers)
    await response.read()
    return response


async def machine_token(browser: aiohttp.ClientSession, idp: InProcessIdp, **fields: str) -> dict[str, Any]:
    """A client_credentials token for reports-bot (client_secret_basic); returns the response body."""
    response = await token_request(browser, idp, {"grant_type": "client_credentials", **fields}, BOT_BASIC)
    assert response.status == 200, await response.text()
    return await response.json()


def widen_bot(idp: InProcessIdp, **changes: Any) -> None:
    """Change the reports-bot client in place: the in-process pool reads its directory on every request."""
    clients = idp.pool.directory.clients
    clients["reports-bot"] = dataclasses.replace(clients["reports-bot"], **changes)


async def token_requests(browser: aiohttp.ClientSession, idp: InProcessIdp) -> dict[str, int]:
    async with browser.get(f"{idp.url}/admin/stats", headers=ADMIN) as response:
        return (await response.json())["token_requests"]


# Success --------------------------------------------------------------------------------------------------------
async def test_client_secret_basic_gets_an_access_token_only(idp: InProcessIdp, browser: aiohttp.ClientSession) -> None:
    data = {"grant_type": "client_credentials", "scope": "reports/read"}
    response = await token_request(browser, idp, data, BOT_BASIC)
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/json;charset=UTF-8"
    assert response.headers["Cache-Control"] == "no-store"
    body = await response.json()
    assert set(body) == {"access_token", "expires_in", "token_type"}, "no id_token, no refresh_token"
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600


async def test_client_secret_post_is_accepted(idp: InProcessIdp, browser: aiohttp.ClientSession) -> None:
    data = {"grant_type": "client_credentials", "client_id": "reports-bot", "client_secret": BOT_SECRET}
    response = await token_request(browser, idp, data | {"scope": "reports/read"})
    assert response.status == 200
    assert set(await response.json()) == {"access_token", "expires_in", "token_type"}


async def test_machine_token_has_cognitos_claims_and_no_user(idp: InProcessIdp, browser: aiohttp.ClientSession) -> None:
    body = await machine_token(browser, idp, scope="reports/read")
    header, _, payload_text = jwt_segments(body["access_token"])
    assert header == {"kid": idp.pool.keys.access_token.kid, "alg": "RS256"}, "the pool's access-token key, no typ"
    assert "\\/" in payload_text, "Cognito escapes / as \\/"
    claims = await verify(browser, idp, body["access_token"])
    assert set(claims) == MACHINE_CLAIMS
    assert claims["sub"] == claims["client_id"] == "reports-bot"
    assert claims["token_use"] == "access" and claims["version"] == 2
    assert claims["scope"] == "reports/read" and claims["iss"] == idp.issuer
    assert claims["auth_time"] == claims["iat"] == int(idp.clock.now)
    assert claims["exp"] - claims["iat"] == 3600
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", claims["jti"])


async def test_omitted_scope_grants_every_allowed_custom_scope(
    idp: InProcessIdp, browser: aiohttp.ClientSession
) -> None:
    claims = await verify(browser, idp, (await machine_token(browser, idp))["access_token"])
    assert claims["scope"] == "reports/read"
    widen_bot(idp, allowed_scopes=("reports/read", "reports/write"))
    claims = await verify(browser, idp, (await machine_token(browser, idp))["access_token"])
    assert claims["scope"] == "reports/read reports/write"
    claims = await verify(browser, idp, (await machine_token(browser, idp, scope="reports/write"))["access_token"])
    assert claims["scope"] == "reports/write", "a requested subset is what the token carries"


async def test_token_lifetime_follows_the_client(idp: InProcessIdp, browser: aiohttp.ClientSession) -> None:
    widen_bot(idp, access_token_validity=300)
    body = await machine_token(browser, idp)
    claims = await verify(browser, idp, body["access_token"])
    assert body["expires_in"] == 300 and claims["exp"] - claims["iat"] == 300


async def test_client_credentials_calls_are_counted(idp: InProcessIdp, browser: aiohttp.ClientSession) -> None:
    await machine_token(browser, idp)
    await machine_token(browser, idp, scope="reports/read")
    refused = await token_request(browser, idp, {"grant_type": "client_credentials"}, BASIC)  # the gateway client
    assert refused.status == 400
    assert await token_requests(browser, idp) == {"client_credentials": 2}, "a grant the client lacks is not counted"


# Refusals -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "scope",
    [
        "reports/delete",  # no such scope on the resource server
        "billing/read",  # no such resource server
        "reports/write",  # defined, but not allowed to reports-bot
        "openid",  # standard scopes need a user
        "reports/read email",
        "reports",
    ],
)
async def test_scopes_other_than_the_clients_custom_ones_are_invalid_scope(
    idp: InProcessIdp, browser: aiohttp.ClientSession, scope: str
) -> None:
    response = await token_request(browser, idp, {"grant_type": "client_credentials", "scope": scope}, BOT_BASIC)
    assert await token_error(response) == (400, {"error": "invalid_scope"})


@pytest.mark.parametrize(
    ("data", "headers"),
    [
        ({}, {"Authorization": aiohttp.encode_basic_auth("reports-bot", "wrong-secret")}),
        ({"client_id": "reports-bot", "client_secret": "wrong-secret"}, None),
        ({"client_id": "reports-bot"}, None),  # a confidential client without its secret
        ({}, {"Authorization": aiohttp.encode_basic_auth("reports-bot", "")}),
        ({}, {"Authorization": aiohttp.encode_basic_auth("nobody", BOT_SECRET)}),
    ],
)
async def test_bad_client_credentials_are_invalid_client(
    idp: InProcessIdp, browser: aiohttp.ClientSession, data: dict[str, str], headers: dict[str, str] | None
) -> None:
    response = await token_request(browser, idp, {"grant_type": "client_credentials", **data}, headers)
    assert await token_error(response) == (400, {"error": "invalid_client"})
    assert await token_requests(browser, idp) == {}


async def test_code_flow_client_is_not_allowed_client_credentials(
    idp: InProcessIdp, browser: aiohttp.ClientSession
) -> None:
    data = {"grant_type": "client_credentials", "scope": "reports/read"}
    response = await token_request(browser, idp, data, BASIC)
    assert await token_error(response) == (400, {"error": "unauthorized_client"})


@pytest.mark.parametrize(
    "data",
    [
        {"grant_type": "authorization_code", "code": "6ce60c34-c63f-4a47-b992-ef24ecc8208d", "redirect_uri": "x"},
        {"grant_type": "refresh_token", "refresh_token": "whatever"},
    ],
)
async def test_machine_client_is_not_allowed_the_user_grants(
    idp: InProcessIdp, browser: aiohttp.ClientSession, data: dict[str, str]
) -> None:
    response = await token_request(browser, idp, data, BOT_BASIC)
    assert await token_error(response) == (400, {"error": "unauthorized_client"})


async def test_machine_client_without_callbacks_gets_the_idp_error_page_at_authorize(
    idp: InProcessIdp, browser: aiohttp.ClientSession
) -> None:
    query = AuthorizeAttempt.new().query("reports-bot", "http://localhost:8000/cognito_redirect", "reports/read")
    location = await authorize(browser, idp, query)
    assert location.host is None and location.path == "/error", "never redirected anywhere"
    assert location.query["error"] == "redirect_mismatch"


@pytest.mark.parametrize("path", ["/oauth2/authorize", "/login"])
async def test_machine_client_with_a_callback_is_refused_the_code_flow(
    idp: InProcessIdp, browser: aiohttp.ClientSession, path: str
) -> None:
    callback = "http://localhost:7000/cb"
    widen_bot(idp, callback_urls=(callback,))
    attempt = AuthorizeAttempt.new()
    async with browser.get(
        f"{idp.url}{path}", params=attempt.query("reports-bot", callback, "reports/read"), allow_redirects=False
    ) as response:
        assert response.status == 302
        location = URL(response.headers["Location"])
    assert str(location.with_query(None)) == callback
    assert location.query["error"] == "unauthorized_client" and location.query["state"] == attempt.state
    assert "code" not in location.query


async def test_machine_token_is_refused_by_userinfo(idp: InProcessIdp, browser: aiohttp.ClientSession) -> None:
    body = await machine_token(browser, idp)
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    async with browser.get(f"{idp.url}/oauth2/userInfo", headers=bearer) as response:
        assert response.status == 401
        assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


# Custom scopes in a user's tokens -----------------------------------------------------------------------------
# (test_dev_idp_flow checks that the gateway's default request, openid email profile, still gets just those.)
async def user_tokens(browser: aiohttp.ClientSession, idp: InProcessIdp, scope: str) -> dict[str, Any]:
    """alice signs in to the gateway client asking for ``scope``; returns the token response body."""
    attempt = AuthorizeAttempt.new()
    code = await sign_in(browser, idp, attempt, scope=scope)
    return await (await exchange(browser, idp, code, attempt.verifier)).json()


async def test_user_access_token_carries_a_requested_custom_scope(
    idp: InProcessIdp, browser: aiohttp.ClientSession
) -> None:
    body = await user_tokens(browser, idp, "openid email profile reports/read")
    claims = await verify(browser, idp, body["access_token"])
    assert claims["scope"] == "openid email profile reports/read"
    assert claims["username"] == "alice" and claims["client_id"] == "gateway"


async def test_custom_scope_does_not_narrow_openid_alone(idp: InProcessIdp, browser: aiohttp.ClientSession) -> None:
    body = await user_tokens(browser, idp, "openid reports/read")
    id_claims = await verify(browser, idp, body["id_token"])
    assert id_claims["email"] == "alice@example.com" and id_claims["name"] == "Alice Liddell"
    async with browser.get(
        f"{idp.url}/oauth2/userInfo", headers={"Authorization": f"Bearer {body['access_token']}"}
    ) as response:
        info = await response.json()
    assert info["email"] == "alice@example.com" and info["name"] == "Alice Liddell"


async def test_custom_scope_the_gateway_lacks_is_invalid_scope(
    idp: InProcessIdp, browser: aiohttp.ClientSession
) -> None:
    attempt = AuthorizeAttempt.new()
    location = await authorize(browser, idp, attempt.query("gateway", idp.redirect_uri(), "openid reports/write"))
    assert location.query["error"] == "invalid_scope" and location.query["state"] == attempt.state


async def test_discovery_does_not_advertise_custom_scopes(idp: InProcessIdp, browser: aiohttp.ClientSession) -> None:
    async with browser.get(f"{idp.issuer}/.well-known/openid-configuration") as response:
        document = await response.json()
    # Cognito lists the standard scopes only (cognito.md 1.7 and quirk 6); relying parties must not need more.
    assert document["scopes_supported"] == ["openid", "email", "phone", "profile"]


# The directory file -----------------------------------------------------------------------------------------------
def test_default_directory_has_the_reports_resource_server_and_bot() -> None:
    directory = load_directory(None)
    assert directory.custom_scopes == {"reports/read", "reports/write"}
    bot, gateway = directory.clients["reports-bot"], directory.clients["gateway"]
    assert bot.allowed_oauth_flows == ("client_credentials",) and bot.allowed_scopes == ("reports/read",)
    assert bot.client_secret and not bot.callback_urls
    assert gateway.allowed_oauth_flows == ("code",), "a client without allowed_oauth_flows keeps the code flow"


def test_directory_without_resource_servers_still_loads() -> None:
    raw = {"clients": [{"client_id": "spa", "callback_urls": ["http://localhost:3000/cb"]}]}
    directory = parse_directory(raw)
    assert directory.resource_servers == {} and directory.clients["spa"].allowed_oauth_flows == ("code",)


_BOT = {"client_id": "bot", "client_secret": "s3cret", "allowed_oauth_flows": ["client_credentials"]}


@pytest.mark.parametrize(
    ("client", "problem"),
    [
        (_BOT | {"allowed_scopes": ["reports/read"], "client_secret": None}, "needs a client_secret"),
        (
            _BOT | {"allowed_oauth_flows": ["client_credentials", "code"], "callback_urls": ["http://localhost/cb"]},
            "client_credentials must be the only flow",
        ),
        (_BOT | {"allowed_scopes": ["openid"]}, "needs a resource-server scope"),
        (_BOT | {"allowed_scopes": ["reports/erase"]}, "not defined by any of resource_servers"),
        (_BOT | {"allowed_oauth_flows": ["implicit"]}, "not supported"),
        ({"client_id": "web", "allowed_scopes": ["openid"]}, "callback_urls must list at least one URL"),
    ],
)
def test_directory_refuses_clients_cognito_would_refuse(client: dict[str, Any], problem: str) -> None:
    raw = {"resource_servers": [{"identifier": "reports", "scopes": ["read"]}], "clients": [client]}
    with pytest.raises(DirectoryError, match=problem):
        parse_directory(raw)


@pytest.mark.parametrize(
    ("servers", "problem"),
    [
        ([{"identifier": "has space", "scopes": ["read"]}], r"resource_servers\[0\] needs an identifier"),
        ([{"scopes": ["read"]}], r"resource_servers\[0\] needs an identifier"),
        ([{"identifier": "r", "scopes": ["a/b"]}], "are not scope names"),
        ([{"identifier": "r", "scopes": "read"}], "must be a list of strings"),
        ([{"identifier": "r"}, {"identifier": "r"}], "defined twice"),
    ],
)
def test_directory_refuses_malformed_resource_servers(servers: list[Any], problem: str) -> None:
    raw = {"resource_servers": servers, "clients": [{"client_id": "spa", "callback_urls": ["http://localhost/cb"]}]}
    with pytest.raises(DirectoryError, match=problem):
        parse_directory(raw)


# The running process -----------------------------------------------------------------------------------------------
async def test_banner_names_the_machine_client_and_the_process_serves_it(browser: aiohttp.ClientSession) -> None:
    idp = start_dev_idp()
    try:
        line = f"# machine client reports-bot: client_credentials at {idp.url}/oauth2/token, scopes reports/read"
        assert line in idp.process.output().splitlines()
        data = {"grant_type": "client_credentials", "scope": "reports/read"}
        async with browser.post(f"{idp.url}/oauth2/token", data=data, headers=BOT_BASIC) as response:
            assert response.status == 200 and (await response.json())["token_type"] == "Bearer"
    finally:
        idp.process.stop()


def test_banner_offers_the_gateway_a_code_flow_client_even_when_a_machine_client_comes_first(tmp_path: Path) -> None:
    directory = json.loads((ROOT / "dev_idp" / "default_directory.json").read_text())
    directory["clients"].reverse()
    idp = start_dev_idp("--users", str(write_json(tmp_path / "users.json", directory)))
    try:
        assert idp.env["COGNITO_CLIENT_ID"] == "gateway"
    finally:
        idp.process.stop()
