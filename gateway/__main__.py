"""``python -m gateway``: read the environment, report every configuration problem at once (exit 2), serve.

``GATEWAY_WORKERS=1`` serves in this process; more make this process the supervisor of that many workers
(``workers``). Either way SIGTERM drains (``server``) and the process exits 0. Startup failures (a port that
cannot be bound, certificates that cannot be loaded) exit 1.

``python -m gateway sessions list|revoke --user NAME`` manages a user's sessions (Redis store).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys

from aiohttp import web

from . import metrics, server, tls, workers
from .app import create_app
from .config import ConfigError, Settings
from .crypto import CipherUnavailable


def _run(settings: Settings, sock: socket.socket, *, settle: float = 0.0, parent: int | None = None) -> int:
    """Build the app in this process and serve it on ``sock`` until drained; 1 when it cannot start."""
    host, port = sock.getsockname()[:2]
    try:
        app = create_app(settings)
        ssl_context = tls.install(app, settings)  # None unless GATEWAY_TLS_CERT_FILE is set
    except (OSError, CipherUnavailable) as exc:
        print(f"cognito-gateway: {exc}", file=sys.stderr)
        return 1

    async def announce(_: web.Application) -> None:
        logging.getLogger("gateway").info(
            "listening on %s:%s for %s, proxying to %s", host, port, settings.public_url, settings.upstream.url
        )

    app.on_startup.append(announce)
    try:
        serving = server.serve(app, settings, sock, ssl_context, settle=settle, parent=parent)
        with asyncio.Runner(loop_factory=server.loop_factory(settings.server.event_loop)) as runner:
            runner.run(serving)
    except metrics.MetricsListenError as exc:
        print(f"cognito-gateway: {exc}", file=sys.stderr)
        return 1
    return 0


def _listen(settings: Settings, port: int | None = None) -> socket.socket | None:
    try:
        return server.listen_socket(settings.listen_host, settings.listen_port if port is None else port)
    except OSError as exc:
        print(
            f"cognito-gateway: cannot listen on GATEWAY_LISTEN={settings.listen_host}:{settings.listen_port}: "
            f"{exc.strerror}",
            file=sys.stderr,
        )
        return None


def _worker(settings: Settings, number: int, port: int) -> int:
    """One worker process: its own socket on the shared port, its own app; exit 3 if it cannot start."""
    server.configure_logging(settings, f"worker {number}")
    sock = _listen(settings, port)
    if sock is None:
        return workers.EXIT_CANNOT_START
    code = _run(settings, sock, settle=server.DRAIN_SETTLE, parent=os.getppid())
    return workers.EXIT_CANNOT_START if code == 1 else code


def main() -> int:
    if sys.argv[1:2] == ["sessions"]:
        from .admin_cli import main as sessions_command

        return sessions_command(sys.argv[2:])
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        print(f"cognito-gateway: {exc}", file=sys.stderr)
        return 2
    metrics.prepare(settings)  # before any fork and create_app: prometheus_client picks its storage at first use
    if settings.server.workers > 1:
        return workers.supervise(settings, _worker)
    server.configure_logging(settings, "main")
    sock = _listen(settings)
    return 1 if sock is None else _run(settings, sock)


if __name__ == "__main__":
    sys.exit(main())
