"""gateway.login_state: one sealed cookie per sign-in attempt, bound to its state, expired by the injected clock,
used once, and at most MAX_PENDING of them."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json

from aiohttp import web

from gateway.config import SessionSettings
from gateway.crypto import SESSION_PURPOSE, Sealer
from gateway.login_state import MAX_PENDING, LoginAttempt, LoginStates

from ..support import FakeClock
from .factories import COOKIE, expired, request, session_settings, set_cookies

PREFIX = f"{COOKIE}_login_"


def remembered(states: LoginStates, attempt: LoginAttempt, browser_has: dict[str, str] | None = None) -> web.Response:
    response = web.Response()
    states.remember(request(cookies=browser_has), response, attempt)
    return response


def cookie_of(states: LoginStates, attempt: LoginAttempt, browser_has: dict[str, str] | None = None) -> dict[str, str]:
    """The browser's login cookies after ``attempt`` is remembered."""
    kept = dict(browser_has or {})
    for name, morsel in set_cookies(remembered(states, attempt, browser_has)).items():
        if expired(morsel):
            kept.pop(name, None)
        else:
            kept[name] = morsel.value
    return kept


def test_an_attempt_comes_back_from_its_cookie(clock: FakeClock) -> None:
    states = LoginStates(session_settings(), clock)
    attempt = states.new("/reports?id=1")
    assert states.take(request(cookies=cookie_of(states, attempt)), attempt.state) == attempt


def test_each_attempt_is_fresh_and_its_challenge_is_s256_of_its_verifier(clock: FakeClock) -> None:
    states = LoginStates(session_settings(), clock)
    first, second = states.new("/"), states.new("/")
    assert len({first.state, first.nonce, second.state, second.nonce}) == 4 and first.verifier != second.verifier
    digest = hashlib.sha256(first.verifier.encode()).digest()
    assert first.code_challenge == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert 43 <= len(first.verifier) <= 128
    urlsafe = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    for value in (first.state, first.nonce, first.verifier):
        assert set(value) <= urlsafe and len(base64.urlsafe_b64decode(value)) >= 32, "256 random bits or more"
    assert len({first.state[:8], first.nonce[:8], first.verifier[:8]}) == 3, "three different values"


def test_the_cookie_is_named_after_its_state_and_holds_no_plain_state(clock: FakeClock) -> None:
    states = LoginStates(session_settings(), clock)
    attempt = states.new("/secret-return-path")
    [(name, value)] = cookie_of(states, attempt).items()
    assert name == states.cookie_name(attempt.state) and name.startswith(PREFIX)
    assert attempt.state not in value and "secret-return-path" not in value


def test_the_cookie_expires_with_the_login_timeout_and_is_lax() -> None:
    states = LoginStates(session_settings(samesite="Strict", login_timeout=300), FakeClock())
    attempt = states.new("/")
    morsel = set_cookies(remembered(states, attempt))[states.cookie_name(attempt.state)]
    assert (morsel["max-age"], morsel["samesite"], morsel["httponly"], morsel["secure"]) == ("300", "Lax", True, True)


# Expiry by the injected clock ------------------------------------------------------------------------------------
def test_an_attempt_is_valid_until_just_before_the_login_timeout(clock: FakeClock) -> None:
    states = LoginStates(session_settings(login_timeout=300), clock)
    attempt = states.new("/")
    browser = cookie_of(states, attempt)
    clock.advance(299)
    assert states.take(request(cookies=browser), attempt.state) == attempt


def test_an_attempt_expires_at_the_login_timeout_by_the_injected_clock(clock: FakeClock) -> None:
    states = LoginStates(session_settings(login_timeout=300), clock)
    attempt = states.new("/")
    browser = cookie_of(states, attempt)
    clock.advance(300)
    assert states.take(request(cookies=browser), attempt.state) is None


# Single use, and bound to the state ------------------------------------------------------------------------------
def test_forget_expires_exactly_that_attempts_cookie(clock: FakeClock) -> None:
    states = LoginStates(session_settings(), clock)
    first, second = states.new("/a"), states.new("/b")
    browser = cookie_of(states, second, cookie_of(states, first))
    response = web.Response()
    states.forget(request(cookies=browser), response, first.state)
    cookies = set_cookies(response)
    assert list(cookies) == [states.cookie_name(first.state)] and expired(cookies[states.cookie_name(first.state)])


def test_after_forget_the_state_finds_nothing(clock: FakeClock) -> None:
    states = LoginStates(session_settings(), clock)
    attempt = states.new("/")
    browser = cookie_of(states, attempt)
    response = web.Response()
    states.forget(request(cookies=browser), response, attempt.state)
    for name, morsel in set_cookies(response).items():
        if expired(morsel):
            browser.pop(name)
    assert states.take(request(cookies=browser), attempt.state) is None


def test_another_state_does_not_open_this_attempt(clock: FakeClock) -> None:
    states = LoginStates(session_settings(), clock)
    attempt, other = states.new("/"), states.new("/")
    browser = cookie_of(states, attempt)
    assert states.take(request(cookies=browser), other.state) is None
    # Even under this attempt's cookie name, a state that is not the sealed one is refused.
    renamed = {states.cookie_name(other.state): browser[states.cookie_name(attempt.state)]}
    assert states.take(request(cookies=renamed), other.state) is None


def test_each_tab_keeps_its_own_attempt(clock: FakeClock) -> None:
    states = LoginStates(session_settings(), clock)
    attempts = [states.new(f"/tab{i}") for i in range(3)]
    browser: dict[str, str] = {}
    for attempt in attempts:
        browser = cookie_of(states, attempt, browser)
    assert [states.take(request(cookies=browser), a.state) for a in attempts] == attempts


# Bounded -------------------------------------------------------------------------------------------------------
def test_at_most_max_pending_attempts_are_kept_and_the_oldest_goes(clock: FakeClock) -> None:
    states = LoginStates(session_settings(), clock)
    attempts, browser = [], {}
    for i in range(MAX_PENDING + 3):
        attempts.append(states.new(f"/{i}"))
        browser = cookie_of(states, attempts[-1], browser)
        clock.advance(1)
    assert len(browser) == MAX_PENDING
    assert set(browser) == {states.cookie_name(a.state) for a in attempts[-MAX_PENDING:]}


def test_clear_all_expires_every_login_cookie_and_nothing_else(clock: FakeClock) -> None:
    states = LoginStates(session_settings(), clock)
    browser = cookie_of(states, states.new("/"), {COOKIE: "session", "app": "x"})
    response = web.Response()
    states.clear_all(request(cookies=browser), response)
    cookies = set_cookies(response)
    assert all(name.startswith(PREFIX) and expired(m) for name, m in cookies.items()) and len(cookies) == 1


# Tampering -------------------------------------------------------------------------------------------------------
def _flip(value: str) -> str:
    middle = len(value) // 2
    return value[:middle] + ("A" if value[middle] != "A" else "B") + value[middle + 1 :]


def test_a_tampered_cookie_opens_nothing(clock: FakeClock) -> None:
    states = LoginStates(session_settings(), clock)
    attempt = states.new("/")
    name = states.cookie_name(attempt.state)
    tampered = {name: _flip(cookie_of(states, attempt)[name])}
    assert states.take(request(cookies=tampered), attempt.state) is None


def test_a_tampered_pending_cookie_is_expired_when_the_next_attempt_starts(clock: FakeClock) -> None:
    states = LoginStates(session_settings(), clock)
    first = states.new("/")
    name = states.cookie_name(first.state)
    browser = {name: _flip(cookie_of(states, first)[name])}
    assert expired(set_cookies(remembered(states, states.new("/"), browser))[name])


def test_a_session_cookie_sealed_with_the_same_secret_is_not_login_state(clock: FakeClock) -> None:
    """Each purpose has its own key (HKDF): ciphertext of one can never be opened as the other."""
    settings: SessionSettings = session_settings()
    states = LoginStates(settings, clock)
    attempt = states.new("/")
    forged = Sealer(settings.keys, SESSION_PURPOSE).seal(json.dumps(dataclasses.asdict(attempt)).encode())
    browser = {states.cookie_name(attempt.state): forged.decode().rstrip("=")}
    assert states.take(request(cookies=browser), attempt.state) is None


def test_another_gateways_secret_opens_nothing(clock: FakeClock) -> None:
    ours, theirs = LoginStates(session_settings(), clock), LoginStates(session_settings(), clock)
    attempt = theirs.new("/")
    assert ours.take(request(cookies=cookie_of(theirs, attempt)), attempt.state) is None


def test_the_sealed_form_holds_every_field_of_the_attempt() -> None:
    """to_json is written field by field: a field added to LoginAttempt and forgotten there fails here."""
    attempt = LoginAttempt.new("/p?q=1", 1_000.5, post=True)
    assert json.loads(attempt.to_json()) == dataclasses.asdict(attempt)
    assert LoginAttempt(**json.loads(attempt.to_json())) == attempt


ODD_NAMES = [f"{PREFIX}a:b", f"{PREFIX}a{{b", f"{PREFIX}a[b]", f"{PREFIX}a/b", f"{PREFIX}0123456789ABCDEF", f"{PREFIX}"]


def test_cookies_that_only_share_the_prefix_are_not_ours_to_open_or_expire(clock: FakeClock) -> None:
    """A Set-Cookie cannot even name some of them (":" or "{" is no token character): touching one would fail."""
    states = LoginStates(session_settings(), clock)
    browser = dict.fromkeys(ODD_NAMES, "x")
    attempt = states.new("/")
    written = set_cookies(remembered(states, attempt, browser))
    assert list(written) == [states.cookie_name(attempt.state)]
    cleared = web.Response()
    states.clear_all(request(cookies=browser), cleared)
    assert "Set-Cookie" not in cleared.headers
