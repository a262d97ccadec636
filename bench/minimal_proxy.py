"""The floor for an aiohttp proxy: no auth, one process, one shared ClientSession, the body streamed in chunks.

    python bench/minimal_proxy.py LISTEN_PORT UPSTREAM_URL

The comparison puts it next to the gateway so the cost of the gateway's own work (cookies, crypto, headers) shows
apart from the cost of aiohttp itself: whatever the gateway loses against this proxy is the gateway's, the rest is
the framework's. It does only what any reverse proxy must: drop hop-by-hop headers both ways and stream the answer.
"""

from __future__ import annotations

import sys

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

# RFC 9110 7.6.1 hop-by-hop headers, plus the ones aiohttp sets itself for the connection it makes.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
SESSION = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", URL)


def _forwardable(headers: CIMultiDict[str] | object) -> CIMultiDict[str]:
    return CIMultiDict((key, value) for key, value in headers.items() if key.lower() not in HOP_BY_HOP)  # type: ignore[attr-defined]


async def proxy(request: web.Request) -> web.StreamResponse:
    """Forward the request as received (raw path, body streamed) and stream the upstream's answer back."""
    target = request.app[UPSTREAM].join(URL(request.raw_path, encoded=True))
    body = request.content if request.body_exists else None
    async with request.app[SESSION].request(
        request.method, target, headers=_forwardable(request.headers), data=body, allow_redirects=False
    ) as upstream:
        response = web.StreamResponse(
            status=upstream.status, reason=upstream.reason, headers=_forwardable(upstream.headers)
        )
        if upstream.content_length is not None:
            response.content_length = upstream.content_length
        await response.prepare(request)
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
        return response


def create_app(upstream: str) -> web.Application:
    app = web.Application()
    app[UPSTREAM] = URL(upstream)
    app.router.add_route("*", "/{tail:.*}", proxy)

    async def session(app: web.Application):  # type: ignore[no-untyped-def]
        # auto_decompress=False: pass the upstream's bytes as they are, as a proxy must.
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
        async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as client:
            app[SESSION] = client
            yield

    app.cleanup_ctx.append(session)
    return app


def main() -> None:
    port, upstream = int(sys.argv[1]), sys.argv[2]
    web.run_app(create_app(upstream), host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
