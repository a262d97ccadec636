"""``python -m gateway``: read the environment, report every configuration problem at once (exit 2), serve.

``python -m gateway sessions list|revoke --user NAME`` manages a user's sessions (Redis store).
"""

from __future__ import annotations

import logging
import os
import socket
import sys

from aiohttp import web

from . import logs, metrics, tls
from .access_log import AccessLogger
from .app import create_app
from .config import ConfigError, Settings
from .session_cookies import MAX_COOKIE_HEADER


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    return sock


def main() -> int:
    if sys.argv[1:2] == ["sessions"]:
        from .admin_cli import main as sessions_command

        return sessions_command(sys.argv[2:])
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        print(f"cognito-gateway: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings)
    metrics.prepare(settings)  # before create_app: prometheus_client picks its storage at first use
    try:
        sock = _bind(settings.listen_host, settings.listen_port)
    except OSError as exc:
        print(
            f"cognito-gateway: cannot listen on GATEWAY_LISTEN={settings.listen_host}:{settings.listen_port}: "
            f"{exc.strerror}",
            file=sys.stderr,
        )
        return 1
    host, port = sock.getsockname()[:2]
    app = create_app(settings)
    try:
        ssl_context = tls.install(app, settings)  # None unless GATEWAY_TLS_CERT_FILE is set
    except OSError as exc:
        print(f"cognito-gateway: {exc}", file=sys.stderr)
        return 1

    async def announce(_: web.Application) -> None:
        logging.getLogger("gateway").info(
            "listening on %s:%s for %s, proxying to %s", host, port, settings.public_url, settings.upstream.url
        )

    app.on_startup.append(announce)
    # The largest session the cookie codec writes must fit in one Cookie header line (aiohttp's default is 8 KiB).
    try:
        web.run_app(
            app,
            sock=sock,
            ssl_context=ssl_context,
            print=None,
            access_log_class=AccessLogger,
            max_field_size=MAX_COOKIE_HEADER,
        )
    except metrics.MetricsListenError as exc:
        print(f"cognito-gateway: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
