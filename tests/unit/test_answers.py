"""gateway.answers: each outcome and failure becomes one answer: a sign-in redirect for browser navigations, 401
JSON for scripts, 403 pages that say who you are, and a plain 500 that gives nothing away."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from yarl import URL

from gateway.errors import InvalidBearer, UpstreamTimeout

from .factories import identity
from .pipeline import BROWSER, Pipeline, StandInOidc

Start = Callable[..., Awaitable[Pipeline]]


async def test_a_navigation_without_a_session_is_sent_to_sign_in_with_fresh_login_state(pipeline: Start) -> None:
    answer = await (await pipeline()).send("/reports?id=1", headers=BROWSER)
    assert answer.status == 302
    location = URL(answer.headers["Location"])
    assert str(location.with_query(None)) == "https://idp.example/oauth2/authorize"
    assert location.query["redirect_uri"] == "http://gateway.test/cognito_redirect"
    [login_cookie] = [c for c in answer.headers.getall("Set-Cookie") if c.startswith("_cognito_gateway_login_")]
    assert "HttpOnly" in login_cookie and "SameSite=Lax" in login_cookie


async def test_a_head_navigation_is_sent_to_sign_in_too(pipeline: Start) -> None:
    assert (await (await pipeline()).send("/", method="HEAD", headers=BROWSER)).status == 302


@pytest.mark.parametrize(
    "headers",
    [{}, {"Accept": "*/*"}, {**BROWSER, "X-Requested-With": "XMLHttpRequest"}, {**BROWSER, "Sec-Fetch-Mode": "cors"}],
    ids=["no-accept", "any", "xhr", "fetch"],
)
async def test_a_script_without_a_session_gets_401_json_and_where_to_sign_in(
    pipeline: Start, headers: dict[str, str]
) -> None:
    answer = await (await pipeline()).send("/api/items?page=2", headers=headers)
    assert answer.status == 401 and answer.headers["Cache-Control"] == "no-store"
    assert answer.json() == {
        "error": "unauthorized",
        "message": "Sign-in required.",
        "sign_in_url": "/oauth2/sign_in?rd=/api/items?page%3D2",
    }
    assert answer.headers["WWW-Authenticate"] == 'Bearer realm="127.0.0.1"'


async def test_a_post_is_never_redirected(pipeline: Start) -> None:
    assert (await (await pipeline()).send("/form", method="POST", headers=BROWSER)).status == 401


async def test_an_unsafe_target_is_not_offered_as_the_place_to_return_to(pipeline: Start) -> None:
    answer = await (await pipeline()).send("//evil.example/x")
    assert answer.status == 401 and answer.json()["sign_in_url"] == "/oauth2/sign_in?rd=/"


async def test_when_the_idp_is_down_a_navigation_gets_a_503_page_not_a_crash(pipeline: Start) -> None:
    answer = await (await pipeline(oidc=StandInOidc(idp_up=False))).send("/", headers=BROWSER)
    assert answer.status == 503 and "Sign-in is unavailable" in answer.text


async def test_forbidden_is_a_page_that_says_who_you_are_and_offers_sign_out(pipeline: Start) -> None:
    gateway = await pipeline(rules="/admin/=group:admins")
    headers = {**BROWSER, **gateway.cookie_for(identity=identity(groups=()))}
    answer = await gateway.send("/admin/", headers=headers)
    assert answer.status == 403 and "Signed in as alice (alice@example.com)." in answer.text
    assert 'action="/oauth2/sign_out"' in answer.text and "Location" not in answer.headers


def _raising(exc: BaseException) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        raise exc

    return handler


async def test_a_gateway_error_gets_its_status_and_code(pipeline: Start) -> None:
    gateway = await pipeline(public=("/",), handler=_raising(UpstreamTimeout()))
    answer = await gateway.send("/slow")
    assert answer.status == 504 and answer.json()["error"] == "upstream_timeout"


async def test_an_invalid_bearer_from_a_handler_carries_rfc_6750s_challenge(pipeline: Start) -> None:
    gateway = await pipeline(public=("/",), handler=_raising(InvalidBearer("The token has expired.")))
    answer = await gateway.send("/x", headers=BROWSER)
    assert answer.status == 401 and answer.json()["error"] == "invalid_token", "JSON even for a browser"
    challenge = answer.headers["WWW-Authenticate"]
    assert 'error="invalid_token"' in challenge and 'error_description="The token has expired."' in challenge


async def test_an_aiohttp_error_keeps_its_status(pipeline: Start) -> None:
    gateway = await pipeline(public=("/",), handler=_raising(web.HTTPMethodNotAllowed("GET", ["POST"])))
    answer = await gateway.send("/x")
    assert answer.status == 405 and answer.json()["error"] == "method_not_allowed"


async def test_a_redirect_raised_by_a_handler_is_not_an_error(pipeline: Start) -> None:
    gateway = await pipeline(public=("/",), handler=_raising(web.HTTPFound("/elsewhere")))
    answer = await gateway.send("/x")
    assert answer.status == 302 and answer.headers["Location"] == "/elsewhere"


async def test_an_unexpected_error_is_a_plain_500_without_its_text(
    pipeline: Start, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = await pipeline(public=("/",), handler=_raising(RuntimeError("db password is hunter2")))
    answer = await gateway.send("/x", headers=BROWSER)
    assert answer.status == 500 and "Something went wrong" in answer.text
    assert "hunter2" not in answer.text and "Traceback" not in answer.text
    assert "hunter2" in caplog.text, "the log has the details"
