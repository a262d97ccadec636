"""A minimal aiohttp upstream for benchmarks: a small fixed answer on every path, so the figure is the gateway's."""

from __future__ import annotations

import sys

from aiohttp import web

BODY = b"ok\n" * 100


async def answer(request: web.Request) -> web.Response:
    return web.Response(body=BODY, content_type="text/plain")


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=lambda _: print("# ready", flush=True))


if __name__ == "__main__":
    main()
