"""gateway.config: every variable parsed and validated, every problem reported at once, no secret ever shown.

The last test runs ``python -m gateway`` for real: what the process makes of a ConfigError (exit 2, one report).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import pytest

from gateway.access import Policy
from gateway.config import DEMO_SESSION_SECRET, ConfigError, Settings
from gateway.env_reader import parse_duration
from gateway.identity import ClaimNames

from ..support import ROOT

SECRET = "dnZ/js812RQDSb1Qdi0JioX6KnZx3KBKhqAh67NUdZQ="
MINIMAL = {
    "COGNITO_USER_POOL_ID": "eu-west-1_AbC123xyz",
    "COGNITO_DOMAIN": "https://login.auth.eu-west-1.amazoncognito.com",
    "COGNITO_CLIENT_ID": "4hpg5n34kduiedr7taqipdo77h",
    "COGNITO_CLIENT_SECRET": "client-secret-value-123",
    "GATEWAY_UPSTREAM": "http://app:5000",
    "GATEWAY_PUBLIC_URL": "https://app.example.com",
    "GATEWAY_SESSION_SECRET": SECRET,
}


def test_minimal_configuration_and_its_defaults() -> None:
    settings = Settings.from_env(MINIMAL)
    assert settings.provider.issuer == "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC123xyz"
    assert settings.redirect_uri == "https://app.example.com/cognito_redirect"
    assert (settings.listen_host, settings.listen_port) == ("0.0.0.0", 8000)
    assert settings.provider.scopes == ("openid", "email", "profile")
    assert settings.provider.algorithms == ("RS256",)
    assert settings.session.secure is True, "https public URL: Secure cookies"
    assert settings.session.samesite == "Lax" and settings.session.lifetime == 12 * 3600
    assert settings.upstream.read_timeout == 60 and settings.upstream.connect_timeout == 5
    assert "client-secret-value-123" not in repr(settings)
    assert SECRET not in repr(settings)


def test_issuer_override_and_http_public_url() -> None:
    env = {
        **MINIMAL,
        "COGNITO_ISSUER": "http://localhost:9000/local_devpool1",
        "GATEWAY_PUBLIC_URL": "http://localhost:8000",
    }
    settings = Settings.from_env(env)
    assert settings.provider.issuer == "http://localhost:9000/local_devpool1"
    assert settings.session.secure is False


def test_rotation_list_keeps_every_key_in_order() -> None:
    second = secrets.token_hex(32)
    settings = Settings.from_env({**MINIMAL, "GATEWAY_SESSION_SECRET": f"{SECRET},{second}"})
    assert len(settings.session.keys) == 2 and settings.session.keys[1] == bytes.fromhex(second)


@pytest.mark.parametrize(
    ("raw", "seconds"), [("90", 90), ("90s", 90), ("15m", 900), ("12h", 43200), ("7d", 604800), ("500ms", 0.5)]
)
def test_durations(raw: str, seconds: float) -> None:
    assert parse_duration(raw) == seconds


BAD = {
    "COGNITO_USER_POOL_ID": "not-a-pool",
    "COGNITO_DOMAIN": "ftp://x",
    "GATEWAY_UPSTREAM": "app:5000",
    "GATEWAY_PUBLIC_URL": "https://app.example.com/with/path",
    "GATEWAY_SESSION_SECRET": "short-and-secret",
    "GATEWAY_LISTEN": "8000",
    "GATEWAY_SCOPES": "email groups",
    "GATEWAY_TOKEN_ALGORITHMS": "HS256,none",
    "GATEWAY_COOKIE_SAMESITE": "sometimes",
    "GATEWAY_COOKIE_SECURE": "perhaps",
    "GATEWAY_SESSION_LIFETIME": "forever",
    "GATEWAY_UPSTREAM_TIMEOUT": "-1",
    "GATEWAY_CALLBACK_PATH": "/oauth2/callback",
    "GATEWAY_LOG_LEVEL": "chatty",
    "GATEWAY_SIGN_OUT_REDIRECT": "//evil.example",
    "GATEWAY_COOKIE_NAME": "bad name;",
    "GATEWAY_RULES": "/admin/=group:; /x=maybe",
    "GATEWAY_PUBLIC_PATHS": "healthz",
    "GATEWAY_UPSTREAMS": "/api/=ftp://x; nothing",
    "GATEWAY_TRUSTED_PROXIES": "10.0.0.0/33",
    "GATEWAY_STRIP_HEADERS": "X Bad",
    "GATEWAY_PROVIDER": "keycloak",
    "GATEWAY_SKIP_AUTH_PREFLIGHT": "sometimes",
    "GATEWAY_MAX_TOKEN_LIFETIME": "ever",
}


def test_every_problem_is_reported_at_once_naming_its_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(BAD)
    message = str(caught.value)
    for name in [*BAD, "COGNITO_CLIENT_ID"]:
        assert name in message, name
    assert "short-and-secret" not in message, "secret values are never printed"


def test_missing_everything_names_every_required_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({})
    for name in (
        "COGNITO_USER_POOL_ID",
        "COGNITO_CLIENT_ID",
        "GATEWAY_UPSTREAM",
        "GATEWAY_PUBLIC_URL",
        "GATEWAY_SESSION_SECRET",
    ):
        assert name in str(caught.value)


@pytest.mark.parametrize(
    "secret",
    ["", "a" * 64, "Zm9v", "not base64 at all!", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="],
)
def test_weak_or_malformed_session_secrets_are_refused(secret: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**MINIMAL, "GATEWAY_SESSION_SECRET": secret})
    assert "GATEWAY_SESSION_SECRET" in str(caught.value)


def test_samesite_none_needs_secure_cookies() -> None:
    env = {**MINIMAL, "GATEWAY_PUBLIC_URL": "http://localhost:8000", "GATEWAY_COOKIE_SAMESITE": "none"}
    with pytest.raises(ConfigError, match="GATEWAY_COOKIE_SAMESITE"):
        Settings.from_env(env)


def problems(**env: str) -> str:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**MINIMAL, **env})
    return str(caught.value)


# Access: GATEWAY_RULES, GATEWAY_PUBLIC_PATHS, GATEWAY_ALLOWED_*, GATEWAY_API_CLIENT_IDS --------------------------
def test_without_access_variables_every_path_needs_a_sign_in_and_bearer_tokens_are_off() -> None:
    access = Settings.from_env(MINIMAL).access
    assert access.rules.policy_for("/anything") == Policy("authenticated")
    assert access.api_client_ids == frozenset() and access.skip_auth_preflight is False


def test_rules_and_public_paths_make_the_rule_table() -> None:
    env = {
        **MINIMAL,
        "GATEWAY_PUBLIC_PATHS": "/health, /static/",
        "GATEWAY_RULES": "/admin/=group:admins;/static/=deny",
    }
    rules = Settings.from_env(env).access.rules
    assert rules.policy_for("/health") == Policy("public")
    assert rules.policy_for("/admin/x") == Policy("group", groups=frozenset({"admins"}))
    assert rules.policy_for("/static/x") == Policy("deny"), "GATEWAY_RULES override GATEWAY_PUBLIC_PATHS"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("/admin", "'/admin' is not [HOST]PATH=POLICY"),
        ("admin=public", "(PATH starts with /)"),
        ("/admin=admins", "unknown policy 'admins'"),
        ("/admin=group:", "group takes one or more values"),
        ("/x=public:yes", "public takes no values"),
    ],
)
def test_a_bad_rule_is_reported_naming_the_variable_and_the_entry(value: str, reason: str) -> None:
    message = problems(GATEWAY_RULES=f"/ok=public;{value}")
    assert f"GATEWAY_RULES: {value!r}" in message and reason in message


def test_a_relative_public_path_is_reported_naming_the_variable() -> None:
    assert "GATEWAY_PUBLIC_PATHS: 'health' must start with /" in problems(GATEWAY_PUBLIC_PATHS="/ok,health")


def test_rule_problems_are_reported_with_the_others() -> None:
    message = problems(GATEWAY_RULES="/x=nobody", GATEWAY_PUBLIC_PATHS="x", GATEWAY_LOG_LEVEL="chatty")
    assert all(name in message for name in ("GATEWAY_RULES", "GATEWAY_PUBLIC_PATHS", "GATEWAY_LOG_LEVEL"))


def test_allowed_groups_and_email_domains_make_the_global_policy() -> None:
    env = {**MINIMAL, "GATEWAY_ALLOWED_GROUPS": "staff, ops", "GATEWAY_ALLOWED_EMAIL_DOMAINS": "@Example.com,b.org"}
    assert Settings.from_env(env).access.rules.policy_for("/x") == Policy(
        "authenticated", groups=frozenset({"staff", "ops"}), email_domains=frozenset({"example.com", "b.org"})
    )


def test_a_star_email_domain_allows_any_domain_as_oauth2_proxys_does() -> None:
    env = {**MINIMAL, "GATEWAY_ALLOWED_EMAIL_DOMAINS": "*"}
    assert Settings.from_env(env).access.rules.policy_for("/x") == Policy("authenticated")


def test_api_client_ids_turn_bearer_tokens_on_for_those_clients() -> None:
    access = Settings.from_env({**MINIMAL, "GATEWAY_API_CLIENT_IDS": " app , bot ,"}).access
    assert access.api_client_ids == frozenset({"app", "bot"})


def test_skip_auth_preflight_is_a_strict_boolean() -> None:
    assert Settings.from_env({**MINIMAL, "GATEWAY_SKIP_AUTH_PREFLIGHT": "true"}).access.skip_auth_preflight
    assert "GATEWAY_SKIP_AUTH_PREFLIGHT: 'sometimes' is not true or false" in problems(
        GATEWAY_SKIP_AUTH_PREFLIGHT="sometimes"
    )


# The provider: GATEWAY_PROVIDER and its default --------------------------------------------------------------------
def _without_pool(**env: str) -> dict[str, str]:
    return {**{k: v for k, v in MINIMAL.items() if k != "COGNITO_USER_POOL_ID"}, **env}


def test_a_pool_id_means_cognito() -> None:
    assert Settings.from_env(MINIMAL).provider.kind == "cognito"


def test_a_cognito_idp_issuer_means_cognito() -> None:
    env = _without_pool(COGNITO_ISSUER="https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC123xyz")
    assert Settings.from_env(env).provider.kind == "cognito"


@pytest.mark.parametrize(
    "issuer",
    ["https://login.example.com/realms/main", "https://cognito-idp.eu-west-1.amazonaws.com.evil.example/pool"],
)
def test_any_other_issuer_means_oidc(issuer: str) -> None:
    assert Settings.from_env(_without_pool(COGNITO_ISSUER=issuer)).provider.kind == "oidc"


def test_gateway_provider_overrides_the_guess() -> None:
    env = _without_pool(COGNITO_ISSUER="http://localhost:9000/local_devpool1", GATEWAY_PROVIDER="Cognito")
    assert Settings.from_env(env).provider.kind == "cognito"
    assert Settings.from_env({**MINIMAL, "GATEWAY_PROVIDER": "oidc"}).provider.kind == "oidc"


def test_an_unknown_provider_is_reported() -> None:
    assert "GATEWAY_PROVIDER: 'okta' is not cognito or oidc" in problems(GATEWAY_PROVIDER="okta")


def test_the_groups_scope_is_refused_for_cognito_only() -> None:
    assert "GATEWAY_SCOPES: Cognito rejects the 'groups' scope" in problems(GATEWAY_SCOPES="openid groups")
    env = _without_pool(COGNITO_ISSUER="https://login.example.com/realms/main", GATEWAY_SCOPES="openid groups")
    assert Settings.from_env(env).provider.scopes == ("openid", "groups")


# Claims: GATEWAY_USER_CLAIM, GATEWAY_GROUPS_CLAIM, GATEWAY_EMAIL_CLAIM ---------------------------------------------
def test_the_claims_default_to_cognitos() -> None:
    assert Settings.from_env(MINIMAL).provider.claims == ClaimNames(
        ("cognito:username", "sub"), "cognito:groups", "email"
    )


def test_a_user_claim_falls_back_to_sub() -> None:
    env = {**MINIMAL, "GATEWAY_USER_CLAIM": "preferred_username"}
    assert Settings.from_env(env).provider.claims.user == ("preferred_username", "sub")


def test_sub_as_the_user_claim_is_sub_alone() -> None:
    assert Settings.from_env({**MINIMAL, "GATEWAY_USER_CLAIM": "sub"}).provider.claims.user == ("sub",)


def test_groups_and_email_claims() -> None:
    env = {**MINIMAL, "GATEWAY_GROUPS_CLAIM": "roles", "GATEWAY_EMAIL_CLAIM": "mail"}
    claims = Settings.from_env(env).provider.claims
    assert (claims.groups, claims.email) == ("roles", "mail")


def test_bad_configuration_exits_2_with_one_report_and_no_secret() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COGNITO_", "GATEWAY_"))}
    result = subprocess.run(
        [sys.executable, "-m", "gateway"],
        cwd=ROOT,
        env={**env, **BAD, "COGNITO_CLIENT_SECRET": "top-secret-value"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("cognito-gateway: invalid configuration:")
    for name in BAD:
        assert name in result.stderr
    assert "top-secret-value" not in result.stderr and "short-and-secret" not in result.stderr
    assert "Traceback" not in result.stderr


def test_a_generic_providers_issuer_is_kept_exactly_as_written() -> None:
    """OIDC Core 3.1.3.7: iss must equal the issuer exactly, and some providers' (Auth0's) end in "/"."""
    oidc = {k: v for k, v in MINIMAL.items() if k not in ("COGNITO_USER_POOL_ID", "COGNITO_DOMAIN")}
    slashed = Settings.from_env({**oidc, "COGNITO_ISSUER": "https://tenant.example.com/"}).provider
    assert (slashed.kind, slashed.issuer) == ("oidc", "https://tenant.example.com/")
    plain = Settings.from_env({**oidc, "COGNITO_ISSUER": "https://tenant.example.com"}).provider
    assert plain.issuer == "https://tenant.example.com"
    pool = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC123xyz"
    cognito = Settings.from_env({**oidc, "COGNITO_ISSUER": f"{pool}/"}).provider
    assert (cognito.kind, cognito.issuer) == ("cognito", pool), "Cognito's issuer never ends in /"


def test_gateway_upstreams_may_stand_in_for_gateway_upstream() -> None:
    env = {k: v for k, v in MINIMAL.items() if k != "GATEWAY_UPSTREAM"}
    settings = Settings.from_env(
        {**env, "GATEWAY_UPSTREAMS": "/api/=http://api:8080; grafana.example.com/=http://g:3000"}
    )
    table = settings.upstream.table
    assert (
        str(table.lookup("/api/x")) == "http://api:8080"
        and str(table.lookup("/", "grafana.example.com")) == "http://g:3000"
    )
    assert table.lookup("/other") is None, "no fallback: the gateway answers 404"
    with pytest.raises(ConfigError, match="GATEWAY_UPSTREAM: required"):
        Settings.from_env(env)


def test_the_published_demo_secret_is_refused_except_for_dev_idp_on_this_machine() -> None:
    demo = {**MINIMAL, "GATEWAY_SESSION_SECRET": DEMO_SESSION_SECRET}
    with pytest.raises(ConfigError, match="GATEWAY_SESSION_SECRET: the demo secret"):
        Settings.from_env(demo)
    with pytest.raises(ConfigError, match="GATEWAY_SESSION_SECRET: the demo secret"):
        Settings.from_env({**demo, "GATEWAY_SESSION_SECRET": f"{SECRET},{DEMO_SESSION_SECRET}"})
    local = Settings.from_env({**demo, "COGNITO_ISSUER": "http://localhost:9000/local_devpool1"})
    assert local.provider.issuer == "http://localhost:9000/local_devpool1"


@pytest.mark.parametrize("path", ["/", "/callback/", "callback", "/oauth2/callback"])
def test_a_callback_path_must_be_a_plain_path_outside_oauth2_not_ending_in_a_slash(path: str) -> None:
    with pytest.raises(ConfigError, match="GATEWAY_CALLBACK_PATH"):
        Settings.from_env({**MINIMAL, "GATEWAY_CALLBACK_PATH": path})
    assert Settings.from_env({**MINIMAL, "GATEWAY_CALLBACK_PATH": "/auth/callback"}).callback_path == "/auth/callback"


@pytest.mark.parametrize("empty", ["", "  ", " ; "])
def test_an_empty_gateway_upstreams_still_needs_gateway_upstream(empty: str) -> None:
    env = {k: v for k, v in MINIMAL.items() if k != "GATEWAY_UPSTREAM"}
    with pytest.raises(ConfigError, match="GATEWAY_UPSTREAM: required"):
        Settings.from_env({**env, "GATEWAY_UPSTREAMS": empty})


def test_rules_and_public_paths_build_one_table() -> None:
    rules = Settings.from_env(
        {
            **MINIMAL,
            "GATEWAY_PUBLIC_PATHS": "/healthz,/static/",
            "GATEWAY_RULES": "/static/private/=deny; a.example/=public",
        }
    ).access.rules
    assert rules.policy_for("/healthz").kind == "public" and rules.policy_for("/healthz/x").kind == "authenticated"
    assert rules.policy_for("/static/app.js").kind == "public" and rules.policy_for("/static/private/k").kind == "deny"
    assert (
        rules.policy_for("/", "a.example").kind == "public"
        and rules.policy_for("/", "b.example").kind == "authenticated"
    )


def test_event_loop_defaults_to_uvloop_and_refuses_other_names():
    assert Settings.from_env(MINIMAL).server.event_loop == "uvloop"
    assert Settings.from_env({**MINIMAL, "GATEWAY_EVENT_LOOP": "asyncio"}).server.event_loop == "asyncio"
    with pytest.raises(ConfigError, match="GATEWAY_EVENT_LOOP"):
        Settings.from_env({**MINIMAL, "GATEWAY_EVENT_LOOP": "tokio"})
