"""Configuration: every variable parsed and validated, every problem reported at once, no secret ever shown."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import pytest

from gateway.config import ConfigError, Settings
from gateway.env_reader import parse_duration

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
