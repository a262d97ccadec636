"""dev_idp's error paths: every one answers as Cognito does, and none is a 500 or a stack trace."""

from __future__ import annotations

import aiohttp
import pytest
from yarl import URL

from .conftest import CLIENT_SECRET, InProcessIdp
from .support import AuthorizeAttempt, submit_form
from .test_dev_idp_flow import BASIC, exchange, sign_in


async def authorize(browser: aiohttp.ClientSession, idp: InProcessIdp, query: dict[str, str]) -> URL:
    async with browser.get(f"{idp.url}/oauth2/authorize", params=query, allow_redirects=False) as response:
        assert response.status == 302
        return URL(response.headers["Location"])


async def token_error(response: aiohttp.ClientResponse) -> tuple[int, dict]:
    assert response.headers["Content-Type"] == "application/json;charset=UTF-8"
    return response.status, await response.json()


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"client_id": "nobody"}, "redirect_mismatch"),
        ({"redirect_uri": "http://localhost:8000/cognito_redirect/"}, "redirect_mismatch"),  # trailing slash
        ({"redirect_uri": "http://LOCALHOST:8000/cognito_redirect"}, "redirect_mismatch"),  # case
        ({"redirect_uri": "https://evil.example/cognito_redirect"}, "redirect_mismatch"),
        ({"client_id": ""}, "Required parameters missing"),
    ],
)
async def test_untrusted_client_or_redirect_shows_the_idp_error_page(
    idp: InProcessIdp, browser: aiohttp.ClientSession, change: dict[str, str], error: str
) -> None:
    query = AuthorizeAttempt.new().query("gateway", idp.redirect_uri()) | change
    location = await authorize(browser, idp, query)
    assert location.host is None and location.path == "/error", "never redirected to the app"
    assert location.query["error"] == error
    async with browser.get(f"{idp.url}{location}") as page:
        assert page.status == 400
        assert "An error was encountered with the requested page." in await page.text()


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge": "too-short"}, "invalid_request"),
        ({"response_type": "token"}, "unauthorized_client"),
        ({"response_type": "id_token"}, "unsupported_response_type"),
        ({"scope": "openid groups"}, "invalid_scope"),
        ({"scope": "email"}, "invalid_scope"),
    ],
)
async def test_other_authorize_errors_go_back_to_the_app_with_state(
    idp: InProcessIdp, browser: aiohttp.ClientSession, change: dict[str, str], error: str
) -> None:
    attempt = AuthorizeAttempt.new()
    location = await authorize(browser, idp, attempt.query("gateway", idp.redirect_uri()) | change)
    assert str(location.with_query(None)) == idp.redirect_uri()
    assert location.query["error"] == error
    assert location.query["state"] == attempt.state


async def test_repeated_authorize_parameter_is_refused(idp: InProcessIdp, browser: aiohttp.ClientSession) -> None:
    query = list(AuthorizeAttempt.new().query("gateway", idp.redirect_uri()).items())
    query.append(("redirect_uri", "https://evil.example/cb"))
    async with browser.get(f"{idp.url}/oauth2/authorize", params=query, allow_redirects=False) as response:
        assert URL(response.headers["Location"]).path == "/error"


async def test_reused_code_is_invalid_grant(idp: InProcessIdp, browser: aiohttp.ClientSession) -> None:
    attempt = AuthorizeAttempt.new()
    code = await sign_in(browser, idp, attempt)
    assert (await exchange(browser, idp, code, attempt.verifier)).status == 200
    assert await token_error(await exchange(browser, idp, code, attempt.verifier)) == (400, {"error": "invalid_grant"})


async def test_expired_code_is_invalid_grant(idp: InProcessIdp, browser: aiohttp.ClientSession) -> None:
    attempt = AuthorizeAttempt.new()
    code = await sign_in(browser, idp, attempt)
    idp.clock.advance(301)  # codes live five minutes
    assert await token_error(await exchange(browser, idp, code, attempt.verifier)) == (400, {"error": "invalid_grant"})


async def test_wrong_verifier_is_invalid_grant(idp: InProcessIdp, browser: aiohttp.ClientSession) -> None:
    attempt = AuthorizeAttempt.new()
    code = await sign_in(browser, idp, attempt)
    wrong = AuthorizeAttempt.new().verifier
    assert await token_error(await exchange(browser, idp, code, wrong)) == (400, {"error": "invalid_grant"})


async def test_missing_verifier_is_invalid_grant(idp: InProcessIdp, browser: aiohttp.ClientSession) -> None:
    attempt = AuthorizeAttempt.new()
    code = await sign_in(browser, idp, attempt)
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": idp.redirect_uri()}
    response = await browser.post(f"{idp.url}/oauth2/token", data=data, headers=BASIC)
    assert await token_error(response) == (400, {"error": "invalid_grant"})


async def test_redirect_uri_must_repeat_the_authorize_one(idp: InProcessIdp, browser: aiohttp.ClientSession) -> None:
    attempt = AuthorizeAttempt.new()
    code = await sign_in(browser, idp, attempt)
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": "http://localhost:8000/other",
        "code_verifier": attempt.verifier,
    }
    response = await browser.post(f"{idp.url}/oauth2/token", data=data, headers=BASIC)
    assert await token_error(response) == (400, {"error": "invalid_grant"})


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": aiohttp.encode_basic_auth("gateway", "wrong-secret")},
        {"Authorization": aiohttp.encode_basic_auth("someone-else", CLIENT_SECRET)},
        {"Authorization": "Basic !!!not-base64"},
        {},  # a confidential client without its secret
    ],
)
async def test_bad_client_credentials_are_invalid_client(
    idp: InProcessIdp, browser: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    attempt = AuthorizeAttempt.new()
    code = await sign_in(browser, idp, attempt)
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": idp.redirect_uri(),
        "code_verifier": attempt.verifier,
    }
    if not headers:
        data["client_id"] = "gateway"
    response = await browser.post(f"{idp.url}/oauth2/token", data=data, headers=headers)
    assert await token_error(response) == (400, {"error": "invalid_client"})


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({}, "invalid_request"),
        ({"grant_type": "password"}, "unsupported_grant_type"),
        ({"grant_type": "client_credentials"}, "unauthorized_client"),
        ({"grant_type": "authorization_code"}, "invalid_request"),
        ({"grant_type": "refresh_token"}, "invalid_request"),
        ({"grant_type": "refresh_token", "refresh_token": "nonsense"}, "invalid_grant"),
    ],
)
async def test_malformed_token_requests(
    idp: InProcessIdp, browser: aiohttp.ClientSession, data: dict[str, str], error: str
) -> None:
    response = await browser.post(f"{idp.url}/oauth2/token", data=data, headers=BASIC)
    assert await token_error(response) == (400, {"error": error})


async def test_token_endpoint_wants_a_form(idp: InProcessIdp, browser: aiohttp.ClientSession) -> None:
    response = await browser.post(f"{idp.url}/oauth2/token", json={"grant_type": "authorization_code"}, headers=BASIC)
    assert await token_error(response) == (400, {"error": "invalid_request"})
    repeated = [("grant_type", "refresh_token"), ("grant_type", "authorization_code")]
    response = await browser.post(f"{idp.url}/oauth2/token", data=repeated, headers=BASIC)
    assert await token_error(response) == (400, {"error": "invalid_request"})


async def test_unconfirmed_user_cannot_sign_in(idp: InProcessIdp, browser: aiohttp.ClientSession) -> None:
    idp.pool.directory.add_unconfirmed_user("carol", "carol-password", "carol@example.com", auto_confirm=False)
    query = AuthorizeAttempt.new().query("gateway", idp.redirect_uri())
    login = str(URL(f"{idp.url}/login").with_query(query))
    response = await submit_form(browser, login, {"username": "carol", "password": "carol-password"})
    assert response.status == 302
    location = URL(response.headers["Location"])
    assert location.path == "/confirm" and "code" not in location.query, "no code until the user is confirmed"


@pytest.mark.parametrize(
    ("username", "password", "message"),
    [
        ("alice", "wrong", "Incorrect username or password."),
        ("nobody", "whatever", "Incorrect username or password."),
    ],
)
async def test_wrong_credentials_show_the_form_again(
    idp: InProcessIdp, browser: aiohttp.ClientSession, username: str, password: str, message: str
) -> None:
    query = AuthorizeAttempt.new().query("gateway", idp.redirect_uri())
    login = str(URL(f"{idp.url}/login").with_query(query))
    response = await submit_form(browser, login, {"username": username, "password": password})
    assert response.status == 200
    assert message in await response.text()


async def test_disabled_user_cannot_sign_in_or_refresh(idp: InProcessIdp, browser: aiohttp.ClientSession) -> None:
    attempt = AuthorizeAttempt.new()
    code = await sign_in(browser, idp, attempt)
    tokens = await (await exchange(browser, idp, code, attempt.verifier)).json()
    browser.cookie_jar.clear()
    async with browser.post(
        f"{idp.url}/admin/users/alice/disable", headers={"Authorization": "Bearer admin-token-for-tests"}
    ) as response:
        assert response.status == 200 and (await response.json())["enabled"] is False

    refresh = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    response = await browser.post(f"{idp.url}/oauth2/token", data=refresh, headers=BASIC)
    assert await token_error(response) == (400, {"error": "invalid_grant"})

    query = AuthorizeAttempt.new().query("gateway", idp.redirect_uri())
    response = await submit_form(
        browser, str(URL(f"{idp.url}/login").with_query(query)), {"username": "alice", "password": "alice-password"}
    )
    assert response.status == 200 and "User is disabled." in await response.text()

    async with browser.post(
        f"{idp.url}/admin/users/alice/enable", headers={"Authorization": "Bearer admin-token-for-tests"}
    ) as response:
        assert response.status == 200
    response = await browser.post(f"{idp.url}/oauth2/token", data=refresh, headers=BASIC)
    assert response.status == 200, "re-enabled: the refresh token works again"


async def test_admin_endpoints_need_the_admin_token(idp: InProcessIdp, browser: aiohttp.ClientSession) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic YWRtaW46YWRtaW4="}):
        async with browser.post(f"{idp.url}/admin/users/alice/disable", headers=headers) as response:
            assert response.status == 401
    assert idp.pool.directory.users["alice"].enabled
    auth = {"Authorization": "Bearer admin-token-for-tests"}
    async with browser.get(f"{idp.url}/admin/users/nobody", headers=auth) as response:
        assert response.status == 404


async def test_revoked_refresh_token_stops_working(idp: InProcessIdp, browser: aiohttp.ClientSession) -> None:
    attempt = AuthorizeAttempt.new()
    code = await sign_in(browser, idp, attempt)
    tokens = await (await exchange(browser, idp, code, attempt.verifier)).json()
    async with browser.post(
        f"{idp.url}/oauth2/revoke", data={"token": tokens["refresh_token"]}, headers=BASIC
    ) as response:
        assert response.status == 200 and await response.read() == b""
    refresh = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    response = await browser.post(f"{idp.url}/oauth2/token", data=refresh, headers=BASIC)
    assert await token_error(response) == (400, {"error": "invalid_grant"})
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    async with browser.get(f"{idp.url}/oauth2/userInfo", headers=bearer) as response:
        assert response.status == 401
        assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


@pytest.mark.parametrize(
    ("data", "headers", "status", "error"),
    [
        ({}, BASIC, 400, "invalid_request"),
        ({"token": "a.b.c"}, BASIC, 400, "unsupported_token_type"),
        ({"token": "x"}, {"Authorization": aiohttp.encode_basic_auth("gateway", "wrong")}, 401, "invalid_client"),
    ],
)
async def test_revoke_errors(
    idp: InProcessIdp, browser: aiohttp.ClientSession, data: dict, headers: dict, status: int, error: str
) -> None:
    response = await browser.post(f"{idp.url}/oauth2/revoke", data=data, headers=headers)
    assert await token_error(response) == (status, {"error": error})


async def test_revoking_an_unknown_token_is_still_200(idp: InProcessIdp, browser: aiohttp.ClientSession) -> None:
    async with browser.post(f"{idp.url}/oauth2/revoke", data={"token": "unknown"}, headers=BASIC) as response:
        assert response.status == 200


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 400), ({"Authorization": "Basic eDp5"}, 400), ({"Authorization": "Bearer not.a.token"}, 401)],
)
async def test_userinfo_errors(idp: InProcessIdp, browser: aiohttp.ClientSession, headers: dict, status: int) -> None:
    async with browser.get(f"{idp.url}/oauth2/userInfo", headers=headers) as response:
        assert response.status == status
        assert "WWW-Authenticate" in response.headers


async def test_id_token_is_not_accepted_as_an_access_token(idp: InProcessIdp, browser: aiohttp.ClientSession) -> None:
    attempt = AuthorizeAttempt.new()
    code = await sign_in(browser, idp, attempt)
    tokens = await (await exchange(browser, idp, code, attempt.verifier)).json()
    async with browser.get(
        f"{idp.url}/oauth2/userInfo", headers={"Authorization": f"Bearer {tokens['id_token']}"}
    ) as response:
        assert response.status == 401


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"client_id": "nobody", "logout_uri": "http://localhost:8000/"},
        {"client_id": "gateway", "logout_uri": "https://evil.example/"},
        {"client_id": "gateway"},
    ],
)
async def test_logout_errors_show_the_idp_error_page(
    idp: InProcessIdp, browser: aiohttp.ClientSession, params: dict[str, str]
) -> None:
    async with browser.get(f"{idp.url}/logout", params=params, allow_redirects=False) as response:
        location = URL(response.headers["Location"])
    assert location.host is None and location.path == "/error"
    assert location.query["error"] == "Required parameters missing"


async def test_login_form_without_csrf_token_is_refused(idp: InProcessIdp, browser: aiohttp.ClientSession) -> None:
    query = AuthorizeAttempt.new().query("gateway", idp.redirect_uri())
    url = URL(f"{idp.url}/login").with_query(query)
    async with browser.post(url, data={"username": "alice", "password": "alice-password"}) as response:
        assert response.status == 403


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("GET", "/oauth2/authorize?client_id=%ff%fe&redirect_uri=%00", {}),
        ("GET", "/login", {}),
        ("POST", "/login?client_id=gateway", {"data": b"\xff\xfe", "headers": {"Content-Type": "text/plain"}}),
        ("POST", "/oauth2/token", {"data": b"%%%", "headers": {"Content-Type": "application/x-www-form-urlencoded"}}),
        (
            "POST",
            "/oauth2/token",
            {"data": b"x" * 100_000, "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
        ),
        ("GET", "/oauth2/userInfo", {"headers": {"Authorization": "Bearer " + "a" * 5000}}),
        (
            "POST",
            "/oauth2/revoke",
            {"data": "token=%E2%28", "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
        ),
        ("GET", "/confirm?username=" + "x" * 5000, {}),
        ("GET", "/error?error=<script>alert(1)</script>", {}),
        ("GET", "/logout?client_id=gateway&logout_uri=%0d%0aSet-Cookie:x=y", {}),
    ],
)
async def test_malformed_requests_never_get_a_500(
    idp: InProcessIdp, browser: aiohttp.ClientSession, method: str, path: str, kwargs: dict
) -> None:
    url = URL(f"{idp.url}{path}", encoded=True)
    async with browser.request(method, url, allow_redirects=False, **kwargs) as response:
        body = await response.text(errors="replace")
        assert response.status < 500, body
        assert "Traceback" not in body
        assert "<script>alert(1)</script>" not in body
        assert "Set-Cookie" not in response.headers.get("Location", "")


FORM = {"Content-Type": "application/x-www-form-urlencoded"}
MALFORMED_BODIES = [b"\xff\xfe%%%", b"grant_type=\xff\xfe", b"grant_type=%ff%fe", b"a=1&a=2", b"x=" + b"y" * 70_000]


@pytest.mark.parametrize("body", MALFORMED_BODIES, ids=["not-utf8", "raw-bytes", "bad-escapes", "repeated", "huge"])
async def test_a_malformed_token_request_gets_cognitos_400(idp: InProcessIdp, body: bytes) -> None:
    async with aiohttp.ClientSession() as client:
        async with client.post(f"{idp.url}/oauth2/token", data=body, headers={**FORM, **BASIC}) as response:
            status, error = await token_error(response)
    # %ff%fe decodes (to U+FFFD), so that body is a form whose grant_type is unknown: still Cognito's 400.
    assert status == 400 and error in ({"error": "invalid_request"}, {"error": "unsupported_grant_type"})


@pytest.mark.parametrize("body", MALFORMED_BODIES[:4], ids=["not-utf8", "raw-bytes", "bad-escapes", "repeated"])
async def test_a_malformed_hosted_ui_form_gets_the_error_page(
    idp: InProcessIdp, browser: aiohttp.ClientSession, body: bytes
) -> None:
    query = AuthorizeAttempt.new().query("gateway", idp.redirect_uri())
    async with browser.post(f"{idp.url}/login", params=query, data=body, headers=FORM) as response:
        # A form that parses but carries no CSRF token gets the 403 page instead; never a 500.
        assert response.status in (400, 403) and "text/html" in response.headers["Content-Type"]
        assert response.status == 400 or body == b"grant_type=%ff%fe"
        assert "Traceback" not in await response.text()
