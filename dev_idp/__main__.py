"""``python -m dev_idp``: run the development identity provider; ``python -m dev_idp admin``: manage users."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from collections.abc import Sequence

from aiohttp import web

from .admin import run_admin_command
from .app import create_app
from .directory import CLIENT_CREDENTIALS, CODE_FLOW, DirectoryError, load_directory
from .keys import load_or_create_keys
from .pool import Pool, new_admin_token
from .settings import IdpSettings, SettingsError, parse_settings

BANNER = "dev_idp is a DEVELOPMENT identity provider that imitates Amazon Cognito. Never use it in production."


def _admin(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m dev_idp admin", description="Disable, enable or show a user.")
    parser.add_argument("action", choices=["disable", "enable", "show"])
    parser.add_argument("username")
    parser.add_argument("--url", default=os.environ.get("DEV_IDP_URL", "http://localhost:9000"))
    parser.add_argument("--token", default=os.environ.get("DEV_IDP_ADMIN_TOKEN"))
    args = parser.parse_args(list(argv))
    if not args.token:
        parser.error("--token (or DEV_IDP_ADMIN_TOKEN) is required: dev_idp prints it at startup")
    return run_admin_command(args.action, args.username, url=args.url, token=args.token)


def _bind(settings: IdpSettings) -> socket.socket:
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, settings.port))
    sock.listen(128)
    sock.set_inheritable(False)
    return sock


def _client_lines(pool: Pool) -> list[str]:
    """The gateway's environment for the first code-flow client, then one comment per machine client.

    Only a code-flow client can sit behind the gateway, so a machine client listed first must not be offered.
    """
    clients = pool.directory.clients.values()
    lines: list[str] = []
    gateway = next((client for client in clients if CODE_FLOW in client.allowed_oauth_flows), None)
    if gateway is not None:
        lines.append("# environment for the gateway:")
        lines += [f"{key}={value}" for key, value in pool.gateway_environment(gateway).items()]
    for client in clients:
        if CLIENT_CREDENTIALS in client.allowed_oauth_flows:
            scopes = " ".join(client.allowed_scopes)
            token_url = f"{pool.public_url}/oauth2/token"
            lines.append(f"# machine client {client.client_id}: client_credentials at {token_url}, scopes {scopes}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["admin"]:
        return _admin(argv[1:])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = parse_settings(argv, os.environ)
        directory = load_directory(settings.users_file)
    except (SettingsError, DirectoryError) as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        sock = _bind(settings)
    except OSError as exc:
        print(f"dev_idp: cannot listen on {settings.host}:{settings.port}: {exc.strerror}", file=sys.stderr)
        return 1
    port = sock.getsockname()[1]
    pool = Pool(
        directory=directory,
        keys=load_or_create_keys(settings.keys_file),
        public_url=settings.public_url or f"http://localhost:{port}",
        auto_confirm=settings.auto_confirm,
        admin_token=settings.admin_token or new_admin_token(),
    )
    pool.with_token_lifetimes(settings.token_ttl, settings.refresh_token_ttl)
    lines = [
        f"# {BANNER}",
        f"# listening on {settings.host}:{port}; issuer {pool.issuer}",
        f"# admin token (python -m dev_idp admin --token ...): {pool.admin_token}",
        *_client_lines(pool),
        "# ready",
    ]
    app = create_app(pool)

    async def announce(_: web.Application) -> None:
        # Printed once signal handlers are in place, so "# ready" means a SIGTERM now stops it cleanly.
        print("\n".join(lines), flush=True)
        logging.getLogger("dev_idp").warning("not for production: dev_idp keeps users and tokens in memory")

    app.on_startup.append(announce)
    web.run_app(app, sock=sock, print=None, access_log_format='%a "%r" %s %b')
    return 0


if __name__ == "__main__":
    sys.exit(main())
