"""gateway.identity: how ID-token, userinfo and access-token claims become the one Identity everything else reads."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.identity import ClaimNames, Identity, from_access_token, user_from_claims

COGNITO = ClaimNames()


def claims(**changes: Any) -> dict[str, Any]:
    base = {"sub": "sub-1", "cognito:username": "alice", "email": "alice@example.com", "email_verified": True}
    return {k: v for k, v in {**base, **changes}.items() if v is not None}


# The user's name -------------------------------------------------------------------------------------------------
def test_the_cognito_username_is_the_username() -> None:
    assert user_from_claims(claims(), COGNITO).username == "alice"


@pytest.mark.parametrize("username", [None, "", 7.5, True, ["alice"]], ids=["absent", "empty", "float", "bool", "list"])
def test_without_a_usable_cognito_username_the_sub_is_the_username(username: object) -> None:
    identity = user_from_claims(claims(**{"cognito:username": username}), COGNITO)
    assert identity.username == "sub-1" and identity.sub == "sub-1"


def test_a_numeric_username_is_kept_as_text() -> None:
    assert user_from_claims(claims(**{"cognito:username": 1234}), COGNITO).username == "1234"


def test_a_configured_user_claim_comes_first_then_sub() -> None:
    names = ClaimNames(user=("preferred_username", "sub"))
    assert user_from_claims(claims(preferred_username="al"), names).username == "al"
    assert user_from_claims(claims(), names).username == "sub-1", "cognito:username is not consulted any more"


def test_a_user_session_is_never_a_machine() -> None:
    assert not user_from_claims(claims(), COGNITO).is_machine


# E-mail ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "verified"),
    [(True, True), ("true", True), ("TRUE", True), (False, False), ("false", False), ("yes", False), (1, False)],
)
def test_email_verified_as_a_boolean_or_a_string(value: object, verified: bool) -> None:
    assert user_from_claims(claims(email_verified=value), COGNITO).email_verified is verified


def test_an_email_without_email_verified_counts_as_verified() -> None:
    """As oauth2-proxy: only a provider that says "unverified" has its e-mail refused."""
    assert user_from_claims(claims(email_verified=None), COGNITO).email_verified is True


def test_a_configured_email_claim() -> None:
    identity = user_from_claims(claims(email=None, mail="a@b.example"), ClaimNames(email="mail"))
    assert identity.email == "a@b.example"


def test_the_email_domain_is_lower_case_and_only_for_a_verified_address() -> None:
    assert Identity("s", "a", email="A@Example.COM", email_verified=True).email_domain == "example.com"
    assert Identity("s", "a", email="a@example.com", email_verified=False).email_domain is None
    assert Identity("s", "a", email="not-an-address", email_verified=True).email_domain is None
    assert Identity("s", "a", email="a@b@evil.example", email_verified=True).email_domain == "evil.example"


# Groups ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "groups"),
    [
        (["admins", "ops"], ("admins", "ops")),
        ("admins", ("admins",)),
        (["admins", 7, None, "ops"], ("admins", "ops")),
        (None, ()),
        ({"admins": True}, ()),
    ],
    ids=["list", "string", "mixed-list", "absent", "object"],
)
def test_groups_as_a_list_or_a_single_string(value: object, groups: tuple[str, ...]) -> None:
    assert user_from_claims(claims(**{"cognito:groups": value}), COGNITO).groups == groups


def test_a_configured_groups_claim() -> None:
    identity = user_from_claims(claims(groups=["staff"], **{"cognito:groups": ["admins"]}), ClaimNames(groups="groups"))
    assert identity.groups == ("staff",)


# Access tokens (Bearer) ------------------------------------------------------------------------------------------
def access(**changes: Any) -> dict[str, Any]:
    base = {"sub": "sub-1", "client_id": "reports-app", "scope": "reports/read openid", "username": "alice"}
    return {k: v for k, v in {**base, **changes}.items() if v is not None}


def test_a_users_access_token_is_that_user_with_the_tokens_scopes() -> None:
    identity = from_access_token(access(**{"cognito:groups": ["admins"]}), COGNITO)
    assert identity.username == "alice" and identity.groups == ("admins",) and not identity.is_machine
    assert identity.scopes == frozenset({"reports/read", "openid"})
    assert (identity.client_id, identity.via) == ("reports-app", "bearer")


def test_a_client_credentials_token_is_a_machine_not_a_user() -> None:
    identity = from_access_token(access(sub="reports-bot", client_id="reports-bot", username=None), COGNITO)
    assert identity.is_machine and identity.username is None
    assert identity.name == "client reports-bot"
    assert identity.groups == () and identity.email is None


def test_a_token_without_scope_has_no_scopes() -> None:
    assert from_access_token(access(scope=None), COGNITO).scopes == frozenset()


# Which claims userinfo must fill in ------------------------------------------------------------------------------
def test_nothing_is_missing_from_a_full_cognito_token_without_groups() -> None:
    """Cognito leaves cognito:groups out for a user in no group, and userinfo would not have them either."""
    assert not COGNITO.missing(claims(), groups=False)


@pytest.mark.parametrize("absent", ["cognito:username", "email"])
def test_a_cognito_token_without_the_user_or_email_claim_asks_userinfo(absent: str) -> None:
    assert COGNITO.missing(claims(**{absent: None}), groups=False)


def test_a_token_without_sub_as_username_needs_nothing_for_the_name() -> None:
    """``sub`` is the last resort for the name and always present, so it never counts as missing."""
    assert not ClaimNames(user=("sub",)).missing({"sub": "s", "email": "e"}, groups=False)


def test_an_oidc_token_without_groups_asks_userinfo() -> None:
    names = ClaimNames(user=("sub",), groups="groups")
    assert names.missing({"sub": "s", "email": "e"}, groups=True)
    assert not names.missing({"sub": "s", "email": "e", "groups": []}, groups=True)
