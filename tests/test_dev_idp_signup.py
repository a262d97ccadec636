"""Sign-up and confirmation on the hosted UI, with the code read from dev_idp's log as a person would."""

from __future__ import annotations

import logging

import aiohttp
import pytest
from yarl import URL

from .conftest import InProcessIdp, start_in_process_idp
from .support import AuthorizeAttempt, submit_form


def signup_url(idp: InProcessIdp, attempt: AuthorizeAttempt) -> str:
    return str(URL(f"{idp.url}/signup").with_query(attempt.query("gateway", idp.redirect_uri())))


async def test_signup_then_confirm_with_the_logged_code_signs_in(
    idp: InProcessIdp, browser: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    attempt = AuthorizeAttempt.new()
    with caplog.at_level(logging.INFO, logger="dev_idp"):
        response = await submit_form(
            browser,
            signup_url(idp, attempt),
            {"username": "dave", "email": "dave@example.com", "password": "dave-pass1"},
        )
    assert response.status == 302
    confirm = URL(idp.url).join(URL(response.headers["Location"]))
    assert confirm.path == "/confirm" and confirm.query["username"] == "dave"
    assert idp.pool.directory.users["dave"].status == "UNCONFIRMED"
    code = next(r.args[1] for r in caplog.records if r.msg.startswith("confirmation code for"))

    wrong = await submit_form(
        browser, str(confirm), {"username": "dave", "code": "000000" if code != "000000" else "1"}
    )
    assert wrong.status == 200 and "Invalid verification code" in await wrong.text()

    response = await submit_form(browser, str(confirm), {"username": "dave", "code": code})
    assert response.status == 302
    location = URL(response.headers["Location"])
    assert str(location.with_query(None)) == idp.redirect_uri()
    assert location.query["state"] == attempt.state and location.query["code"]
    user = idp.pool.directory.users["dave"]
    assert (user.status, user.email_verified) == ("CONFIRMED", True)


async def test_auto_confirm_signs_in_straight_after_signup(pool_keys, browser: aiohttp.ClientSession) -> None:
    idp, runner = await start_in_process_idp(pool_keys, auto_confirm=True)
    try:
        attempt = AuthorizeAttempt.new()
        response = await submit_form(
            browser,
            signup_url(idp, attempt),
            {"username": "erin", "email": "erin@example.com", "password": "erin-pass1"},
        )
        assert response.status == 302
        assert URL(response.headers["Location"]).query["state"] == attempt.state
        assert idp.pool.directory.users["erin"].status == "CONFIRMED"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"username": "alice", "email": "new@example.com", "password": "long-enough"}, "User already exists"),
        ({"username": "frank", "email": "alice@example.com", "password": "long-enough"}, "User already exists"),
        ({"username": "frank", "email": "not-an-email", "password": "long-enough"}, "Invalid email address format."),
        ({"username": "frank", "email": "frank@example.com", "password": "short"}, "Password did not conform"),
        ({"username": "has space", "email": "frank@example.com", "password": "long-enough"}, "without spaces"),
    ],
)
async def test_signup_problems_are_shown_on_the_form(
    idp: InProcessIdp, browser: aiohttp.ClientSession, fields: dict[str, str], message: str
) -> None:
    response = await submit_form(browser, signup_url(idp, AuthorizeAttempt.new()), fields)
    assert response.status == 200
    assert message in await response.text()
    assert "frank" not in idp.pool.directory.users
