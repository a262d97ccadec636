"""gateway.session_cookies: the cookie codec. Values are split into numbered chunks, every flag is explicit, and
chunks left over from a longer value are expired."""

from __future__ import annotations

from http.cookies import SimpleCookie

import pytest
from aiohttp import web

from gateway.session_backends import CookieBackend
from gateway.session_cookies import CHUNK_SIZE, MAX_CHUNKS, CookieAttributes, SessionCookies, is_gateway_cookie

from .factories import COOKIE, expired, request, session_settings, set_cookies, user_session

NAMES = [COOKIE if i == 0 else f"{COOKIE}_{i}" for i in range(MAX_CHUNKS)]


def written(value: str, *, cookies: dict[str, str] | None = None, **settings: object) -> web.Response:
    response = web.Response()
    SessionCookies(session_settings(**settings)).write(request(cookies=cookies), response, value, max_age=600)
    return response


def test_a_value_that_fits_is_one_cookie() -> None:
    assert {name: m.value for name, m in set_cookies(written("v" * CHUNK_SIZE)).items()} == {COOKIE: "v" * CHUNK_SIZE}


def test_a_longer_value_is_split_at_chunk_size() -> None:
    value = "a" * CHUNK_SIZE + "c" * 5
    cookies = set_cookies(written(value))
    assert [cookies[name].value for name in NAMES] == ["a" * CHUNK_SIZE, "c" * 5]
    assert MAX_CHUNKS == 2, "two chunks keep the Cookie header under the 8 KiB that servers and clients allow"


def test_the_chunks_read_back_as_the_whole_value() -> None:
    value = "".join(chr(ord("a") + i % 26) for i in range(CHUNK_SIZE * (MAX_CHUNKS - 1) + 17))
    sent = {name: morsel.value for name, morsel in set_cookies(written(value)).items()}
    assert SessionCookies(session_settings()).read(request(cookies=sent)) == value


def test_every_set_cookie_of_a_full_chunk_fits_a_browser() -> None:
    response = written("x" * CHUNK_SIZE * MAX_CHUNKS, domain="app.example.com", samesite="None")
    headers = response.headers.getall("Set-Cookie")
    assert len(headers) == MAX_CHUNKS and max(len(f"Set-Cookie: {h}") for h in headers) < 4096


def test_a_value_beyond_max_chunks_is_an_error_not_a_truncated_session() -> None:
    with pytest.raises(ValueError, match=f"does not fit in {MAX_CHUNKS} cookies"):
        written("x" * (CHUNK_SIZE * MAX_CHUNKS + 1))


def test_chunks_left_from_a_longer_value_are_expired() -> None:
    browser_has = {name: "old" for name in NAMES}  # every chunk the codec writes
    cookies = set_cookies(written("short", cookies=browser_has))
    assert cookies[COOKIE].value == "short"
    assert all(expired(cookies[name]) for name in NAMES[1:])


def test_only_chunks_the_browser_has_are_expired() -> None:
    cookies = set_cookies(written("short", cookies={COOKIE: "old", f"{COOKIE}_1": "old"}))
    assert set(cookies) == {COOKIE, f"{COOKIE}_1"}


def test_reading_stops_at_a_missing_chunk() -> None:
    codec = SessionCookies(session_settings())
    assert codec.read(request(cookies={COOKIE: "a", f"{COOKIE}_2": "c"})) == "a", "_2 is never one of ours"


def test_chunks_without_the_first_cookie_are_no_session() -> None:
    codec = SessionCookies(session_settings())
    assert codec.read(request(cookies={f"{COOKIE}_1": "b"})) is None
    assert codec.read(request(cookies={COOKIE: ""})) is None
    assert codec.read(request()) is None


def test_clear_expires_every_chunk_the_browser_has() -> None:
    response = web.Response()
    browser_has = {COOKIE: "a", f"{COOKIE}_1": "b", "other": "x"}
    SessionCookies(session_settings()).clear(request(cookies=browser_has), response)
    cookies = set_cookies(response)
    assert set(cookies) == {COOKIE, f"{COOKIE}_1"} and all(expired(m) for m in cookies.values())


def test_a_real_sealed_session_round_trips_through_the_codec() -> None:
    settings = session_settings()
    backend = CookieBackend(settings)
    value = backend.cookie_value(user_session(1_700_000_000))
    response = web.Response()
    SessionCookies(settings).write(request(), response, value, max_age=60)
    sent = {name: morsel.value for name, morsel in set_cookies(response).items()}
    assert SessionCookies(settings).read(request(cookies=sent)) == value


# Attributes ------------------------------------------------------------------------------------------------------
def test_session_cookie_attributes_are_all_explicit() -> None:
    morsel = set_cookies(written("v", secure=True, samesite="Strict", domain="example.com"))[COOKIE]
    assert morsel["httponly"] is True and morsel["secure"] is True
    assert morsel["samesite"] == "Strict" and morsel["path"] == "/"
    assert morsel["domain"] == "example.com" and morsel["max-age"] == "600"


def test_without_https_the_cookie_is_not_secure_but_still_httponly() -> None:
    morsel = set_cookies(written("v", secure=False))[COOKIE]
    assert not morsel["secure"] and morsel["httponly"] is True and morsel["domain"] == ""


def test_expired_chunks_keep_the_attributes() -> None:
    cookies = set_cookies(written("v", cookies={COOKIE: "a", f"{COOKIE}_1": "b"}, samesite="Strict"))
    chunk = cookies[f"{COOKIE}_1"]
    assert chunk["expires"] == "Thu, 01 Jan 1970 00:00:00 GMT"
    assert (chunk["httponly"], chunk["secure"], chunk["samesite"], chunk["path"]) == (True, True, "Strict", "/")


@pytest.mark.parametrize(("session", "login"), [("Strict", "Lax"), ("Lax", "Lax"), ("None", "None")])
def test_login_cookies_let_the_idps_redirect_carry_them(session: str, login: str) -> None:
    """The callback is a cross-site top-level navigation from the IdP: Strict would drop the login state."""
    attributes = CookieAttributes.for_login(session_settings(samesite=session))
    assert attributes.samesite == login and attributes.secure is True


def test_a_set_cookie_reads_back_with_the_standard_parser() -> None:
    line = CookieAttributes("example.com", True, "Lax").header("n", "v-_1", max_age=60)
    assert line == "n=v-_1; Domain=example.com; HttpOnly; Max-Age=60; Path=/; SameSite=Lax; Secure"
    parsed: SimpleCookie = SimpleCookie()
    parsed.load(line)
    assert parsed["n"].value == "v-_1" and parsed["n"]["max-age"] == "60" and parsed["n"]["secure"] is True


@pytest.mark.parametrize("value", ["a;b", "a b", 'a"b', "a,b", "a\\b", "a\r\nSet-Cookie: x=1", "é", "a\x00"])
def test_a_value_that_would_need_quoting_is_refused_not_written(value: str) -> None:
    """A ``;`` or a line break in a value would add attributes or headers of its own; none is ever written."""
    response = web.Response()
    with pytest.raises(ValueError, match="cannot carry unquoted"):
        CookieAttributes(None, True, "Lax").set(response, "n", value, max_age=60)
    with pytest.raises(ValueError):
        CookieAttributes(None, True, "Lax").set(response, "a=b", "v", max_age=60)
    assert "Set-Cookie" not in response.headers


def test_setting_a_cookie_twice_in_one_response_keeps_only_the_last() -> None:
    response = web.Response()
    response.headers.add("Set-Cookie", "app=1; Path=/")
    attributes = CookieAttributes(None, True, "Lax")
    attributes.expire(response, COOKIE)
    attributes.set(response, COOKIE, "new", max_age=60)
    lines = response.headers.getall("Set-Cookie")
    assert lines[0] == "app=1; Path=/" and [line.split(";")[0] for line in lines] == ["app=1", f"{COOKIE}=new"]


def test_an_upstreams_own_cookies_stay_as_they_were_when_the_session_is_written() -> None:
    response = web.Response(headers={"Content-Type": "text/plain"})
    response.headers.add("Set-Cookie", "app=1; Path=/")
    response.headers.add("X-App", "a")
    response.headers.add("Set-Cookie", "theme=dark")
    SessionCookies(session_settings()).write(request(), response, "v", max_age=60)
    assert list(response.headers.items())[:4] == [
        ("Content-Type", "text/plain"),
        ("Set-Cookie", "app=1; Path=/"),
        ("X-App", "a"),
        ("Set-Cookie", "theme=dark"),
    ]
    assert response.headers.getall("Set-Cookie")[2].startswith(f"{COOKIE}=v;")


def test_which_cookies_are_the_gateways() -> None:
    assert is_gateway_cookie(COOKIE, COOKIE) and is_gateway_cookie(f"{COOKIE}_1", COOKIE)
    assert is_gateway_cookie(f"{COOKIE}_login_0123", COOKIE)
    assert not is_gateway_cookie(f"{COOKIE}x", COOKIE) and not is_gateway_cookie("session", COOKIE)
