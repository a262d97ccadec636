"""dev_idp and the gateway under test, started the way a deployment would start them.

The gateway runs as ``python -m gateway`` from a checkout (this one, or ``--baseline DIR``): ``-m`` puts the
working directory first on ``sys.path``, so each checkout runs its own ``gateway`` package with this venv's
libraries. Its access log is off (``GATEWAY_ACCESS_LOG=false``, and ``GATEWAY_LOG_LEVEL=warning`` for checkouts
older than that variable), because the comparison is with peers whose access logs are off; readiness is polled on ``/oauth2/healthz`` since
the "listening" line is an info line. ``GATEWAY_WORKERS`` and the rest stay at their defaults unless
``--gateway-env`` says otherwise.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from procs import Child

ROOT = Path(__file__).resolve().parent.parent
CLIENT_ID = "gateway"
CLIENT_SECRET = "gateway-dev-secret-for-local-use-only"
SESSION_SECRET = "dnZ/js812RQDSb1Qdi0JioX6KnZx3KBKhqAh67NUdZQ="
COOKIE_PREFIX = "_cognito_gateway"
CALLBACK_PATH = "/cognito_redirect"


def write_directory(path: Path, callback_urls: list[str]) -> Path:
    """dev_idp's default directory with every proxy's callback registered for the ``gateway`` client."""
    directory = json.loads((ROOT / "dev_idp" / "default_directory.json").read_text())
    directory["clients"][0]["callback_urls"] = callback_urls
    path.write_text(json.dumps(directory))
    return path


def start_idp(port: int, directory: Path) -> Child:
    child = Child(
        "dev_idp", [sys.executable, "-m", "dev_idp", "--port", str(port), "--users", str(directory)], cwd=ROOT
    )
    child.wait_for_line(r"^# ready")
    return child


def issuer(idp_port: int) -> str:
    return f"http://localhost:{idp_port}/local_devpool1"


def gateway_env(port: int, store: str, *, idp_port: int, upstream: str, redis_url: str) -> dict[str, str]:
    env = {
        "GATEWAY_PROVIDER": "cognito",
        "COGNITO_ISSUER": issuer(idp_port),
        "COGNITO_CLIENT_ID": CLIENT_ID,
        "COGNITO_CLIENT_SECRET": CLIENT_SECRET,
        "GATEWAY_UPSTREAM": upstream,
        "GATEWAY_SESSION_SECRET": SESSION_SECRET,
        "GATEWAY_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "GATEWAY_LISTEN": f"127.0.0.1:{port}",
        "GATEWAY_SESSION_STORE": store,
        "GATEWAY_LOG_LEVEL": "warning",  # the access log of a checkout older than GATEWAY_ACCESS_LOG
        "GATEWAY_ACCESS_LOG": "false",
    }
    if store == "redis":
        env["GATEWAY_REDIS_URL"] = redis_url
    return env


def start_gateway(name: str, checkout: Path, env: dict[str, str]) -> Child:
    child = Child(name, [sys.executable, "-m", "gateway"], env=env, cwd=checkout)
    child.wait_for_http(f"{env['GATEWAY_PUBLIC_URL']}/oauth2/healthz")
    return child
