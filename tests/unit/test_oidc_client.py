"""gateway.oidc.OidcClient.authorize_url: the fixed part is built once per endpoint, the per-sign-in values are
appended, and the result is the URL yarl would build whole."""

from __future__ import annotations

from typing import cast

from yarl import URL

from gateway.oidc import Endpoints, OidcClient
from gateway.oidc.jwks import JwksCache

from .factories import provider_settings

REDIRECT_URI = "https://app.example/cognito_redirect"
FRESH = {"state": "s-1_x", "nonce": "n-2_y", "code_challenge": "c-3_z"}


def client(authorization: str = "https://idp.example/oauth2/authorize") -> OidcClient:
    oidc = OidcClient(provider_settings())
    oidc._endpoints = Endpoints(authorization, "https://idp.example/oauth2/token", "", None, None, None)
    oidc._jwks = cast(JwksCache, object())  # loaded, as far as authorize_url is concerned (it uses no key)
    return oidc


def built_whole(authorization: str) -> str:
    """What the URL was before the fixed part was cached: one yarl update_query with every parameter."""
    return str(
        URL(authorization).update_query(
            response_type="code",
            client_id="gateway",
            redirect_uri=REDIRECT_URI,
            scope="openid email",
            **FRESH,
            code_challenge_method="S256",
        )
    )


def test_the_url_is_the_one_yarl_builds_whole() -> None:
    authorization = "https://idp.example/oauth2/authorize"
    assert client(authorization).authorize_url(**FRESH, redirect_uri=REDIRECT_URI) == built_whole(authorization)


def test_each_sign_in_gets_its_own_values() -> None:
    oidc = client()
    first = URL(oidc.authorize_url(**FRESH, redirect_uri=REDIRECT_URI))
    second = URL(oidc.authorize_url(state="other", nonce="n", code_challenge="c", redirect_uri=REDIRECT_URI))
    assert first.query["state"] == "s-1_x" and second.query["state"] == "other"
    assert second.query["redirect_uri"] == REDIRECT_URI and second.query["code_challenge_method"] == "S256"


def test_an_endpoint_with_its_own_query_keeps_it_and_sends_each_parameter_once() -> None:
    authorization = "https://idp.example/authorize?tenant=a&state=planted&code_challenge_method=plain"
    url = URL(client(authorization).authorize_url(**FRESH, redirect_uri=REDIRECT_URI))
    assert url.query["tenant"] == "a"
    assert url.query.getall("state") == ["s-1_x"] and url.query.getall("code_challenge_method") == ["S256"]


def test_values_that_need_encoding_are_encoded() -> None:
    url = client().authorize_url(state="a&b=c", nonce="n", code_challenge="c", redirect_uri=REDIRECT_URI)
    assert URL(url).query["state"] == "a&b=c" and "a%26b%3Dc" in url


def test_a_new_redirect_uri_or_endpoint_is_not_served_from_the_cache() -> None:
    oidc = client()
    oidc.authorize_url(**FRESH, redirect_uri=REDIRECT_URI)
    assert URL(oidc.authorize_url(**FRESH, redirect_uri="https://b.example/cb")).query["redirect_uri"] == (
        "https://b.example/cb"
    )
    oidc._endpoints = Endpoints("https://idp2.example/authorize", "", "", None, None, None)
    assert oidc.authorize_url(**FRESH, redirect_uri=REDIRECT_URI).startswith("https://idp2.example/authorize?")
