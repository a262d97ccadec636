"""``python -m upstream_demo [--host H] [--port P]``: serve the demo app."""

from __future__ import annotations

import argparse
import os
import sys

from werkzeug.serving import make_server

from .alb import AlbHeaderVerifier
from .app import create_app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m upstream_demo", description=__doc__)
    parser.add_argument("--host", default=os.environ.get("UPSTREAM_DEMO_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("UPSTREAM_DEMO_PORT", "5000")))
    args = parser.parse_args(argv)
    alb = AlbHeaderVerifier.from_env(os.environ)
    server = make_server(args.host, args.port, create_app(alb), threaded=True)
    print(f"# upstream_demo listening on http://{args.host}:{server.port}", flush=True)
    print("# it trusts identity headers: reach it only through the gateway", flush=True)
    if alb is None:
        print(
            "# x-amzn-oidc-data is not checked: set UPSTREAM_DEMO_ALB_KEYS_URL to the gateway's /oauth2/keys",
            flush=True,
        )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
