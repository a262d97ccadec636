"""dev_idp's settings: command-line flags, each with an environment variable of the same meaning.

A flag wins over its variable; a variable wins over the default. A bad value stops startup with one message that
names every bad setting.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping, Sequence

from yarl import URL

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class SettingsError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class IdpSettings:
    host: str = "127.0.0.1"
    port: int = 9000
    public_url: str | None = None  # None: http://localhost:{bound port}, known once the socket is bound
    users_file: str | None = None
    keys_file: str | None = None
    auto_confirm: bool = False
    admin_token: str | None = None  # None: a random token, printed in the banner
    token_ttl: int | None = None  # overrides every client's ID and access token lifetime
    refresh_token_ttl: int | None = None  # overrides every client's refresh token lifetime


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dev_idp",
        description="A local identity provider that behaves like an Amazon Cognito user pool. Not for production.",
    )
    parser.add_argument("--host", help="address to listen on (DEV_IDP_HOST, default 127.0.0.1)")
    parser.add_argument("--port", help="port to listen on, 0 picks a free one (DEV_IDP_PORT, default 9000)")
    parser.add_argument(
        "--public-url",
        help="base URL browsers and relying parties use (DEV_IDP_PUBLIC_URL, default http://localhost:PORT)",
    )
    parser.add_argument(
        "--users",
        help="users, clients and resource servers, as JSON (DEV_IDP_USERS, default: built-in alice, bob, the gateway "
        "client and the reports-bot machine client)",
    )
    parser.add_argument("--keys", help="file that keeps the signing keys across restarts (DEV_IDP_KEYS)")
    parser.add_argument(
        "--auto-confirm",
        action="store_true",
        default=None,
        help="confirm new sign-ups without a code, like a PreSignUp trigger (DEV_IDP_AUTO_CONFIRM)",
    )
    parser.add_argument("--admin-token", help="bearer token for the /admin endpoints (DEV_IDP_ADMIN_TOKEN)")
    parser.add_argument(
        "--token-ttl", help="ID and access token lifetime in seconds, for every client (DEV_IDP_TOKEN_TTL)"
    )
    parser.add_argument(
        "--refresh-token-ttl", help="refresh token lifetime in seconds, for every client (DEV_IDP_REFRESH_TOKEN_TTL)"
    )
    return parser


def parse_settings(argv: Sequence[str], environ: Mapping[str, str]) -> IdpSettings:
    args = _parser().parse_args(list(argv))
    problems: list[str] = []

    def pick(flag: str | None, variable: str) -> str | None:
        return flag if flag is not None else environ.get(variable)

    def integer(flag: str | None, variable: str, default: int | None, minimum: int) -> int | None:
        raw = pick(flag, variable)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            value = minimum - 1
        if value < minimum or (value > 65535 and variable == "DEV_IDP_PORT"):
            problems.append(f"{variable} (--{variable[8:].lower().replace('_', '-')}): {raw!r} is not a valid value")
            return default
        return value

    auto_confirm = args.auto_confirm
    if auto_confirm is None:
        raw = environ.get("DEV_IDP_AUTO_CONFIRM", "").strip().lower()
        if raw not in _TRUE | _FALSE:
            problems.append(f"DEV_IDP_AUTO_CONFIRM: {raw!r} is not one of true/false/1/0")
        auto_confirm = raw in _TRUE

    public_url = pick(args.public_url, "DEV_IDP_PUBLIC_URL") or None
    if public_url is not None:
        url = URL(public_url)
        if url.scheme not in ("http", "https") or not url.host or url.query_string or url.fragment:
            problems.append(f"DEV_IDP_PUBLIC_URL (--public-url): {public_url!r} must be an http(s) URL with no query")
        public_url = public_url.rstrip("/")

    settings = IdpSettings(
        host=pick(args.host, "DEV_IDP_HOST") or "127.0.0.1",
        port=integer(args.port, "DEV_IDP_PORT", 9000, 0) or 0,
        public_url=public_url,
        users_file=pick(args.users, "DEV_IDP_USERS") or None,
        keys_file=pick(args.keys, "DEV_IDP_KEYS") or None,
        auto_confirm=auto_confirm,
        admin_token=pick(args.admin_token, "DEV_IDP_ADMIN_TOKEN") or None,
        token_ttl=integer(args.token_ttl, "DEV_IDP_TOKEN_TTL", None, 1),
        refresh_token_ttl=integer(args.refresh_token_ttl, "DEV_IDP_REFRESH_TOKEN_TTL", None, 1),
    )
    if problems:
        raise SettingsError("dev_idp: invalid settings:\n  " + "\n  ".join(problems))
    return settings
