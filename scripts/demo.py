"""`make demo`: dev_idp + upstream_demo + the gateway on this machine, no Docker and no AWS.

It starts the three processes with the commands docker-compose.yml gives them and its variables, plus a few of its
own for a run on this machine (loopback listen addresses, a random session secret, and GATEWAY_API_CLIENT_IDS for
the README's Bearer example); it prefixes their output with their names, prints where to go and how to sign in,
and stops them all on Ctrl-C.
"""

from __future__ import annotations

import importlib.util
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IDP_PORT, UPSTREAM_PORT, GATEWAY_PORT = 9000, 5000, 8000


def start(name: str, args: list[str], env: dict[str, str], ready: str) -> tuple[subprocess.Popen[str], list[str]]:
    process = subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    lines: list[str] = []
    seen = threading.Event()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            print(f"[{name}] {line}", end="", flush=True)
            if re.search(ready, line):
                seen.set()
        seen.set()

    threading.Thread(target=pump, daemon=True).start()
    if not seen.wait(30) or process.poll() is not None:
        raise SystemExit(f"demo: {name} did not start; its output is above (a port already in use?)")
    return process, lines


def _stop_on_sigterm(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not interrupt the shutdown
    raise KeyboardInterrupt  # the same clean shutdown as Ctrl-C: the finally block stops every child


def main() -> int:
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    children: list[subprocess.Popen[str]] = []
    try:
        idp, idp_lines = start("dev_idp", ["-m", "dev_idp", "--port", str(IDP_PORT)], {}, r"^# ready")
        children.append(idp)
        cognito_env = dict(
            line.split("=", 1) for line in idp_lines if re.match(r"^(COGNITO_[A-Z_]+|GATEWAY_PROVIDER)=", line)
        )
        # upstream_demo checks the signed x-amzn-oidc-data against the gateway's keys, as an app behind an ALB would.
        keys = {"UPSTREAM_DEMO_ALB_KEYS_URL": f"http://127.0.0.1:{GATEWAY_PORT}/oauth2/keys"}
        upstream, _ = start(
            "upstream_demo", ["-m", "upstream_demo", "--port", str(UPSTREAM_PORT)], keys, r"listening on"
        )
        children.append(upstream)
        if importlib.util.find_spec("gateway.__main__") is None:
            print(
                "\ndemo: the gateway is not built yet (gateway/__main__.py is missing).\n"
                f"      dev_idp runs at http://localhost:{IDP_PORT} and upstream_demo at "
                f"http://127.0.0.1:{UPSTREAM_PORT}; Ctrl-C stops both.\n",
                flush=True,
            )
        else:
            gateway_env = {
                **cognito_env,
                "GATEWAY_UPSTREAM": f"http://127.0.0.1:{UPSTREAM_PORT}",
                "GATEWAY_PUBLIC_URL": f"http://localhost:{GATEWAY_PORT}",
                "GATEWAY_LISTEN": f"127.0.0.1:{GATEWAY_PORT}",
                "GATEWAY_SESSION_SECRET": secrets.token_urlsafe(32),
                # dev_idp's machine client may call the app with its access token (README, API clients).
                "GATEWAY_API_CLIENT_IDS": "reports-bot,gateway",
            }
            gateway, _ = start("gateway", ["-m", "gateway"], gateway_env, r"listening on")
            children.append(gateway)
            print(
                "\n================================================================\n"
                f"  Open http://localhost:{GATEWAY_PORT}\n"
                "  Sign in as alice / alice-password (group admins)\n"
                "          or bob   / bob-password   (no groups)\n"
                "  or sign up: the confirmation code appears in dev_idp's log.\n"
                "  API clients: dev_idp's reports-bot gets a Bearer token (README, API clients).\n"
                "  Ctrl-C stops the demo.\n"
                "================================================================\n",
                flush=True,
            )
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        print("demo: a process exited; stopping the others", flush=True)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()


if __name__ == "__main__":
    sys.exit(main())
