"""gateway.responses: which requests are browser navigations (sent to sign in) and which get JSON, and the pages."""

from __future__ import annotations

import json

import pytest

from gateway.responses import error_response, forbidden_response, is_navigation, redirect, wants_html

from .factories import identity, request

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def accepting(accept: str | None, *, method: str = "GET", **headers: str):  # type: ignore[no-untyped-def]
    pairs = [(k.replace("_", "-"), v) for k, v in headers.items()] + ([("Accept", accept)] if accept else [])
    return request("/page", method=method, headers=pairs)


# wants_html ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("accept", [BROWSER, "text/html", "application/xhtml+xml", "text/html;q=0.5"])
def test_html_named_in_accept_wants_html(accept: str) -> None:
    assert wants_html(accepting(accept))


@pytest.mark.parametrize("accept", [None, "*/*", "application/json", "text/*", "text/html;q=0", "text/plain"])
def test_anything_else_does_not(accept: str | None) -> None:
    assert not wants_html(accepting(accept))


def test_each_accept_value_is_parsed_once_and_the_cache_is_bounded() -> None:
    from gateway.responses import _names_html

    _names_html.cache_clear()
    for _ in range(3):
        assert wants_html(accepting(BROWSER))
    assert _names_html.cache_info().hits == 2
    for n in range(1000):  # a client sending a new Accept each time cannot grow the cache
        wants_html(accepting(f"text/x-{n}"))
    assert _names_html.cache_info().currsize <= 256


# is_navigation ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_a_get_or_head_accepting_html_is_a_navigation(method: str) -> None:
    assert is_navigation(accepting(BROWSER, method=method))


def test_sec_fetch_mode_navigate_is_a_navigation() -> None:
    assert is_navigation(accepting(BROWSER, Sec_Fetch_Mode="navigate"))


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS"])
def test_other_methods_are_never_navigations(method: str) -> None:
    assert not is_navigation(accepting(BROWSER, method=method))


@pytest.mark.parametrize(
    "headers",
    [
        {"X_Requested_With": "XMLHttpRequest"},
        {"X_Requested_With": "xmlhttprequest"},
        {"Sec_Fetch_Mode": "cors"},
        {"Sec_Fetch_Mode": "no-cors"},
        {"Sec_Fetch_Mode": "same-origin"},
    ],
)
def test_a_script_that_accepts_html_is_not_a_navigation(headers: dict[str, str]) -> None:
    assert not is_navigation(accepting(BROWSER, **headers))


@pytest.mark.parametrize("accept", [None, "*/*", "application/json"])
def test_a_get_that_does_not_name_html_is_not_a_navigation(accept: str | None) -> None:
    assert not is_navigation(accepting(accept))


# The answers -----------------------------------------------------------------------------------------------------
def test_an_error_is_json_for_api_clients() -> None:
    response = error_response(accepting("*/*"), 503, "Down", "Try later.", code="idp_unavailable", extra={"n": 1})
    assert response.status == 503 and response.content_type == "application/json"
    assert json.loads(response.text or "") == {"error": "idp_unavailable", "message": "Try later.", "n": 1}
    assert response.headers["Cache-Control"] == "no-store"


def test_an_error_is_an_escaped_page_for_browsers() -> None:
    response = error_response(accepting(BROWSER), 400, "Bad <b>", "No <script>x</script>", code="bad&code")
    assert response.content_type == "text/html"
    page = response.text or ""
    assert "<script>x" not in page and "No &lt;script&gt;x&lt;/script&gt;" in page and "bad&amp;code" in page


def test_json_only_is_json_even_for_browsers() -> None:
    assert (
        error_response(accepting(BROWSER), 401, "t", "m", code="c", json_only=True).content_type == "application/json"
    )


def test_forbidden_says_who_you_are_and_offers_sign_out() -> None:
    response = forbidden_response(accepting(BROWSER), "Not for you.", identity())
    page = response.text or ""
    assert response.status == 403 and "Signed in as alice (alice@example.com)." in page
    assert 'action="/oauth2/sign_out"' in page


def test_forbidden_for_api_clients_names_the_user_and_groups() -> None:
    body = json.loads(forbidden_response(accepting("*/*"), "Not for you.", identity()).text or "")
    assert body == {"error": "forbidden", "message": "Not for you.", "user": "alice", "groups": ["admins"]}


def test_forbidden_without_an_identity_offers_no_sign_out() -> None:
    page = forbidden_response(accepting(BROWSER), "Closed.", None).text or ""
    assert "sign_out" not in page and "Signed in as" not in page


@pytest.mark.parametrize(
    ("location", "sent"),
    [
        ("/a b", "/a%20b"),
        ("/x\r\nSet-Cookie: y=1", "/x%0D%0ASet-Cookie:%20y=1"),
        ("/caf\u00e9", "/caf%C3%A9"),
        ("/\u2028", "/%E2%80%A8"),
        ("/tab\there", "/tab%09here"),
    ],
)
def test_a_location_is_sent_as_printable_ascii(location: str, sent: str) -> None:
    assert redirect(location).headers["Location"] == sent


def test_a_printable_location_is_sent_as_it_is_escapes_included() -> None:
    location = "https://idp.example/authorize?state=a-_b&rd=%2Fx%3Fy%3D1&q=~!$'()*+,;:@"
    assert redirect(location).headers["Location"] == location
