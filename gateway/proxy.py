"""The proxy: every request that is not one of the gateway's own goes to the upstream, streamed both ways.

The request target is forwarded byte for byte (``yarl.URL(..., encoded=True)``: aiohttp's client would otherwise
normalise ``/a/../b`` and ``%2F``). Bodies are never buffered whole: the request body is the server's stream and
the response is copied chunk by chunk, so memory stays flat through gigabyte uploads and downloads. One shared
``ClientSession`` with pooled keep-alive connections serves every request; nothing is created per request.
"""

from __future__ import annotations

import logging

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from .appkeys import HEADERS, SETTINGS, UPSTREAM_HTTP
from .bodies import PayloadTooLarge, request_body
from .errors import BadRequest, UpstreamTimeout, UpstreamUnavailable
from .identity import IDENTITY

log = logging.getLogger("gateway.proxy")

CHUNK = 64 * 1024


def _upstream_request(request: web.Request) -> tuple[URL, CIMultiDict[str]]:
    """The upstream URL (the target byte for byte) and the headers: the client's, cleaned, plus the identity's."""
    settings = request.app[SETTINGS]
    raw_target = request.raw_path
    # SECURITY: only origin-form targets ("/path?query"); an absolute-form target ("http://other/") must not
    # choose what the upstream URL becomes.
    if not raw_target.startswith("/"):
        raise BadRequest("The request target must be a path.", code="invalid_target")
    url = URL(str(settings.upstream.url).rstrip("/") + raw_target, encoded=True)
    headers = request.app[HEADERS].upstream(request.headers, request[IDENTITY])
    headers["X-Forwarded-For"] = request.remote or ""
    headers["X-Forwarded-Proto"] = settings.public_url.scheme
    headers["X-Forwarded-Host"] = settings.public_url.raw_authority
    return url, headers


async def proxy(request: web.Request) -> web.StreamResponse:
    """Forward the request as ``request[IDENTITY]`` (set by the identity middleware) says, and stream the answer."""
    url, headers = _upstream_request(request)
    data = await request_body(request)  # sends the 100 Continue a client may wait for
    response: web.StreamResponse | None = None
    try:
        async with request.app[UPSTREAM_HTTP].request(
            request.method, url, headers=headers, data=data, allow_redirects=False
        ) as upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            response.headers.extend(request.app[HEADERS].downstream(upstream.headers))
            await response.prepare(request)
            async for chunk in upstream.content.iter_chunked(CHUNK):
                await response.write(chunk)
            await response.write_eof()
            return response
    except TimeoutError as exc:
        if response is None:
            log.warning("upstream timed out: %s %s", request.method, request.rel_url.raw_path[:300])
            raise UpstreamTimeout() from exc
        raise _abort(request, "timed out mid-response") from exc
    except aiohttp.ClientError as exc:
        if response is None and isinstance(exc.__cause__, PayloadTooLarge):
            raise exc.__cause__ from None
        if response is None:
            log.warning(
                "upstream unavailable (%s): %s %s",
                exc.__class__.__name__,
                request.method,
                request.rel_url.raw_path[:300],
            )
            raise UpstreamUnavailable() from exc
        raise _abort(request, f"failed mid-response ({exc.__class__.__name__})") from exc


def _abort(request: web.Request, why: str) -> ConnectionResetError:
    """Headers are sent: the only honest signal left is to close the connection without finishing the body."""
    log.warning("upstream %s: %s %s", why, request.method, request.rel_url.raw_path[:300])
    if request.transport is not None:
        request.transport.close()
    return ConnectionResetError(why)
