"""gateway.headers: what the upstream receives of the client's headers, the identity headers added, and what
comes back of the upstream's."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.headers import HeaderPolicy, header_value, identity_headers

from .factories import COOKIE, identity


def upstream(*pairs: tuple[str, str], pass_host_header: bool = True, **policy: object) -> CIMultiDict[str]:
    incoming = CIMultiDictProxy(CIMultiDict(pairs))
    headers = HeaderPolicy(cookie_names=(COOKIE,), pass_host_header=pass_host_header, **policy)  # type: ignore[arg-type]
    return headers.upstream(incoming, None)


def downstream_response_headers(received: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    return HeaderPolicy(cookie_names=(COOKIE,)).downstream(received)


# Inbound ---------------------------------------------------------------------------------------------------------
def test_ordinary_headers_pass_as_sent() -> None:
    sent = (("Accept", "text/html"), ("X-Custom", "a"), ("X-Custom", "b"))
    assert list(upstream(*sent).items()) == list(sent)


def test_the_clients_authorization_passes_only_when_configured() -> None:
    assert "Authorization" not in upstream(("Authorization", "Basic eDp5"))
    assert upstream(("Authorization", "Basic eDp5"), pass_authorization=True)["Authorization"] == "Basic eDp5"


def test_site_specific_headers_are_stripped_in_every_spelling() -> None:
    sent = upstream(
        ("X-Site-User", "m"),
        ("x_site_user", "m"),
        ("X-Corp-Role", "m"),
        ("X-Kept", "k"),
        strip=("X-Site-User", "X-Corp-*"),
    )
    assert list(sent) == ["X-Kept"]


@pytest.mark.parametrize(
    "name",
    [
        "Connection",
        "Keep-Alive",
        "Proxy-Authorization",
        "Proxy-Connection",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
    ],
)
def test_hop_by_hop_headers_are_dropped(name: str) -> None:
    assert name not in upstream((name, "x"), ("Accept", "*/*"))


def test_headers_named_in_connection_are_dropped_in_any_spelling() -> None:
    sent = upstream(("Connection", "close, X-Secret ,x_other"), ("X-Secret", "1"), ("X-Other", "2"), ("X-Kept", "3"))
    assert list(sent) == ["X-Kept"]


@pytest.mark.parametrize(
    "name",
    [
        "X-Forwarded-User",
        "x-forwarded-user",
        "X_Forwarded_User",
        "X.Forwarded.Email",
        "X-Forwarded-Groups",
        "X-Forwarded-For",
        "X-Forwarded-Host",
        "X-Forwarded-Proto",
        "X-Forwarded-Client-Id",
        "X-Amzn-Oidc-Identity",
        "X-Amzn-Oidc-Data",
        "X-Auth-Request-User",
        "X-Original-URL",
        "X-Pomerium-Jwt-Assertion",
        "OIDC-Claim-sub",
        "Forwarded",
        "X-Real-IP",
        "Remote-User",
        "REMOTE_USER",
        "X-Remote-User",
        "X-User",
        "X-Email",
        "X-Groups",
        "X-Client-IP",
        "GAP-Auth",
        "Expect",
    ],
)
def test_identity_and_forwarding_headers_a_client_sends_never_reach_the_upstream(name: str) -> None:
    assert list(upstream((name, "admin"), ("Accept", "*/*"))) == ["Accept"]


def test_the_host_header_passes_only_when_configured() -> None:
    assert upstream(("Host", "app.example.com"))["Host"] == "app.example.com"
    assert "Host" not in upstream(("Host", "app.example.com"), pass_host_header=False)


def test_the_gateways_cookies_are_removed_and_the_others_kept_byte_for_byte() -> None:
    sent = upstream(("Cookie", f'a=1; {COOKIE}=sealed; {COOKIE}_1=chunk;b="q v"; {COOKIE}_login_ab=s'))
    assert sent.getall("Cookie") == ['a=1; b="q v"']


def test_a_cookie_that_only_shares_the_prefix_is_not_the_gateways() -> None:
    assert upstream(("Cookie", f"{COOKIE}x=1; {COOKIE}=s"))["Cookie"] == f"{COOKIE}x=1"


def test_several_cookie_headers_become_one() -> None:
    assert upstream(("Cookie", "a=1"), ("Cookie", f"{COOKIE}=s; b=2")).getall("Cookie") == ["a=1; b=2"]


def test_no_cookie_header_is_sent_when_only_the_gateways_cookies_came() -> None:
    assert "Cookie" not in upstream(("Cookie", f"{COOKIE}=s; {COOKIE}_1=t"))
    assert "Cookie" not in upstream(("Cookie", f"{COOKIE}=s"), ("Cookie", " ; "))


# The identity headers --------------------------------------------------------------------------------------------
def test_a_users_identity_headers() -> None:
    headers = dict(identity_headers(identity(groups=("admins", "ops"), preferred_username="alice.l")))
    assert headers == {
        "X-Forwarded-User": "alice",
        "X-Amzn-Oidc-Identity": "sub-alice",
        "X-Forwarded-Email": "alice@example.com",
        "X-Forwarded-Groups": "admins,ops",
        "X-Forwarded-Preferred-Username": "alice.l",
    }


def test_an_unverified_email_is_not_sent() -> None:
    assert "X-Forwarded-Email" not in dict(identity_headers(identity(email_verified=False)))


def test_no_groups_header_without_groups() -> None:
    assert "X-Forwarded-Groups" not in dict(identity_headers(identity(groups=())))


def test_a_comma_in_a_group_name_cannot_add_a_group() -> None:
    groups = dict(identity_headers(identity(groups=("a,admins", "b"))))["X-Forwarded-Groups"]
    assert groups.split(",") == ["a%2Cadmins", "b"]


@pytest.mark.parametrize(
    ("claim", "sent"),
    [
        ("alice\r\nX-Forwarded-Groups: admins", "alice%0D%0AX-Forwarded-Groups: admins"),
        ("zoë", "zo%C3%AB"),
        ("100%", "100%25"),
        ("a\x00b", "a%00b"),
    ],
)
def test_claims_become_ascii_header_values_that_cannot_split_a_header(claim: str, sent: str) -> None:
    assert header_value(claim) == sent
    assert dict(identity_headers(identity(username=claim)))["X-Forwarded-User"] == sent


def test_a_machine_is_never_presented_as_a_user() -> None:
    machine = identity(
        sub="bot", username=None, email=None, groups=(), client_id="bot", scopes=frozenset({"r/b", "r/a"}), via="bearer"
    )
    assert identity_headers(machine) == [("X-Forwarded-Client-Id", "bot"), ("X-Forwarded-Scopes", "r/a r/b")]


def test_a_bearer_user_gets_the_client_and_scopes_and_the_user() -> None:
    headers = dict(identity_headers(identity(client_id="app", scopes=frozenset({"openid"}), via="bearer")))
    assert headers["X-Forwarded-Client-Id"] == "app" and headers["X-Forwarded-Scopes"] == "openid"
    assert headers["X-Forwarded-User"] == "alice"


def test_a_session_user_gets_no_client_or_scope_headers() -> None:
    headers = dict(identity_headers(identity(scopes=frozenset({"openid"}))))
    assert "X-Forwarded-Client-Id" not in headers and "X-Forwarded-Scopes" not in headers


# Outbound --------------------------------------------------------------------------------------------------------
def test_response_headers_lose_hop_by_hop_ones_and_keep_cookies_and_location() -> None:
    received = CIMultiDictProxy(
        CIMultiDict(
            [
                ("Connection", "keep-alive, X-Internal"),
                ("Keep-Alive", "timeout=5"),
                ("Transfer-Encoding", "chunked"),
                ("X-Internal", "1"),
                ("Set-Cookie", "a=1; Path=/"),
                ("Set-Cookie", "b=2; HttpOnly"),
                ("Location", "/next?x=%2F"),
                ("Content-Type", "text/plain"),
            ]
        )
    )
    assert list(downstream_response_headers(received).items()) == [
        ("Set-Cookie", "a=1; Path=/"),
        ("Set-Cookie", "b=2; HttpOnly"),
        ("Location", "/next?x=%2F"),
        ("Content-Type", "text/plain"),
    ]


def test_an_upstreams_set_cookie_for_the_gateways_cookies_is_dropped() -> None:
    received = CIMultiDictProxy(
        CIMultiDict(
            [("Set-Cookie", f"{COOKIE}=evil; Path=/"), ("Set-Cookie", f"{COOKIE}_login_x=e"), ("Set-Cookie", "a=1")]
        )
    )
    assert downstream_response_headers(received).getall("Set-Cookie") == ["a=1"]
