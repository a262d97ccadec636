"""gateway.bearer: which Authorization headers carry a Bearer token, which are refused outright, and what a token
that fails verification becomes."""

from __future__ import annotations

from typing import cast

import pytest

from gateway.bearer import MAX_TOKEN_LENGTH, BearerTokens
from gateway.errors import InvalidBearer, InvalidToken
from gateway.identity import Identity
from gateway.oidc import OidcClient

from .factories import identity, request

TOKEN = "eyJraWQiOiJrIn0.eyJzdWIiOiJzIn0.c2ln-_~+/=="


def presented(*authorization: str) -> str | None:
    return BearerTokens.presented(request(headers=[("Authorization", value) for value in authorization]))


def test_no_authorization_header_is_no_token() -> None:
    assert presented() is None


@pytest.mark.parametrize("value", [f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER   {TOKEN}  ", f"  Bearer {TOKEN}"])
def test_a_bearer_token_is_read_whatever_the_schemes_case_and_spacing(value: str) -> None:
    assert presented(value) == TOKEN


@pytest.mark.parametrize("value", ["Basic dXNlcjpwYXNz", "Digest username=x", "Token abc", "Bearertoken"])
def test_another_scheme_is_not_our_credential(value: str) -> None:
    assert presented(value) is None


def test_two_authorization_headers_are_refused() -> None:
    with pytest.raises(InvalidBearer, match="more than one Authorization header"):
        presented(f"Bearer {TOKEN}", "Basic dXNlcjpwYXNz")


@pytest.mark.parametrize(
    "value",
    [
        "Bearer",
        "Bearer ",
        "Bearer    ",
        "Bearer two tokens",
        "Bearer tok;en",
        'Bearer "quoted"',
        "Bearer tok=en",  # "=" only as padding at the end
        "Bearer é",
        "Bearer " + "a" * (MAX_TOKEN_LENGTH + 1),
    ],
    ids=["bare", "empty", "spaces", "two", "semicolon", "quoted", "inner-equals", "non-ascii", "too-long"],
)
def test_a_malformed_bearer_token_is_refused(value: str) -> None:
    with pytest.raises(InvalidBearer, match="not a well-formed Bearer token"):
        presented(value)


def test_the_longest_allowed_token_is_read() -> None:
    assert presented("Bearer " + "a" * MAX_TOKEN_LENGTH) == "a" * MAX_TOKEN_LENGTH


class FakeOidc:
    """Stands in for ``OidcClient.verify_bearer``."""

    def __init__(self, answer: Identity | Exception) -> None:
        self.answer = answer
        self.asked: list[tuple[str, frozenset[str]]] = []

    async def verify_bearer(self, token: str, client_ids: frozenset[str]) -> Identity:
        self.asked.append((token, client_ids))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


async def test_a_verified_token_is_its_identity_checked_against_the_api_client_ids() -> None:
    machine = identity(username=None, client_id="bot", via="bearer")
    oidc = FakeOidc(machine)
    tokens = BearerTokens(cast(OidcClient, oidc), frozenset({"bot", "app"}))
    assert await tokens.identity(TOKEN) == machine
    assert oidc.asked == [(TOKEN, frozenset({"bot", "app"}))]


async def test_a_token_that_fails_verification_is_invalid_bearer_without_the_reason() -> None:
    """The reason goes to the log; the client gets RFC 6750's invalid_token and no detail."""
    tokens = BearerTokens(cast(OidcClient, FakeOidc(InvalidToken("the token has expired"))), frozenset({"bot"}))
    with pytest.raises(InvalidBearer) as caught:
        await tokens.identity(TOKEN)
    assert caught.value.code == "invalid_token" and "expired" not in caught.value.message
