"""The proxy: every request that is not one of the gateway's own goes to the upstream, streamed both ways.

The request target is forwarded byte for byte (``yarl.URL(..., encoded=True)``: aiohttp's client would otherwise
normalise ``/a/../b`` and ``%2F``). Bodies are never buffered whole: the request body is the server's stream and
the response is copied chunk by chunk, so memory stays flat through gigabyte uploads and downloads. One shared
``ClientSession`` with pooled keep-alive connections serves every request; nothing is created per request.
WebSocket upgrades go to ``websocket_proxy`` with the same URL and headers; ``streaming`` copies the body and
bounds the waits (GATEWAY_UPSTREAM_TIMEOUT, or GATEWAY_STREAM_IDLE_TIMEOUT between a stream's chunks).
"""

from __future__ import annotations

import logging

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from . import streaming, websocket_proxy
from .appkeys import HEADERS, SETTINGS, UPSTREAM_HTTP
from .errors import BadRequest, UpstreamTimeout, UpstreamUnavailable
from .identity import IDENTITY

log = logging.getLogger("gateway.proxy")


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
    settings = request.app[SETTINGS]
    if settings.streams.proxy_websockets and websocket_proxy.is_upgrade(request):
        return await websocket_proxy.proxy_websocket(request, url, headers)
    http = request.app[UPSTREAM_HTTP]
    try:
        async with (
            streaming.AnswerDeadline(settings.upstream.read_timeout) as deadline,
            http.request(
                request.method,
                url,
                headers=headers,
                data=deadline.body(request),
                allow_redirects=False,
                timeout=streaming.without_read_timeout(http.timeout),
            ) as upstream,
        ):
            deadline.answered()
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            response.headers.extend(request.app[HEADERS].downstream(upstream.headers))
            await response.prepare(request)
            # From here on nothing raises: a cut is logged and closes the connection (streaming.cut).
            await streaming.copy_body(
                request,
                upstream,
                response,
                read_timeout=settings.upstream.read_timeout,
                idle_timeout=settings.streams.idle_timeout,
            )
            return response
    except TimeoutError as exc:
        log.warning("upstream timed out: %s", streaming.describe(request))
        raise UpstreamTimeout() from exc
    except aiohttp.ClientError as exc:
        log.warning("upstream unavailable (%s): %s", exc.__class__.__name__, streaming.describe(request))
        raise UpstreamUnavailable() from exc
