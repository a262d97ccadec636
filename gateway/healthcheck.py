"""``python -m gateway.healthcheck``: the container HEALTHCHECK. Exit 0 when ``/oauth2/healthz`` answers 200.

It reads GATEWAY_LISTEN like the gateway does, so the check follows the port when the port is changed.
"""

from __future__ import annotations

import os
import sys
import urllib.request


def main() -> int:
    listen = os.environ.get("GATEWAY_LISTEN", "0.0.0.0:8000")
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    url = f"http://{host if ':' not in host else f'[{host}]'}:{port}/oauth2/healthz"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return 0 if response.status == 200 else 1
    except OSError as exc:
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
