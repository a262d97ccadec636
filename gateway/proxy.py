"""The proxy: every request that is not one of the gateway's own goes to the upstream, streamed both ways.

The request target is forwarded byte for byte (``yarl.URL(..., encoded=True)``, sent as its ``raw_path_qs``: no
normalising of ``/a/../b`` or ``%2F``). Bodies are never buffered whole: the request body is the server's stream and
the response is copied chunk by chunk, so memory stays flat through gigabyte uploads and downloads. One shared
``UpstreamClient`` (``upstream_client``: pooled keep-alive connections, httptools parsing) serves every plain
request; nothing is created per request. WebSocket upgrades go to ``websocket_proxy`` (aiohttp's client) with the
same URL and headers; ``streaming`` copies the body and bounds the waits (GATEWAY_UPSTREAM_TIMEOUT, or
GATEWAY_STREAM_IDLE_TIMEOUT between a stream's chunks).
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import StreamReader, web
from multidict import CIMultiDict
from yarl import URL

from . import request_id, streaming, websocket_proxy
from .appkeys import HEADERS, SETTINGS, UPSTREAM_CLIENT
from .bodies import request_body
from .errors import BadRequest, UpstreamTimeout, UpstreamUnavailable
from .identity import IDENTITY
from .observe import TimedUpstream
from .path_table import request_host
from .upstream_client import Response, UpstreamConnectionError

log = logging.getLogger("gateway.proxy")

SMALL_BODY = 16 * 1024  # up to this, a response is read whole and sent with its head (one socket write)


def _upstream_request(request: web.Request) -> tuple[URL, CIMultiDict[str]]:
    """The upstream URL (the target byte for byte) and the headers: the client's, cleaned, plus the identity's."""
    settings = request.app[SETTINGS]
    raw_target = request.raw_path
    # SECURITY: only origin-form targets ("/path?query"); an absolute-form target ("http://other/") must not
    # choose what the upstream URL becomes.
    if not raw_target.startswith("/"):
        raise BadRequest("The request target must be a path.", code="invalid_target")
    url = upstream_url(request)
    headers = request.app[HEADERS].upstream(request.headers, request[IDENTITY])
    headers[request_id.HEADER] = request[request_id.REQUEST_ID]  # replaces the client's (see request_id)
    headers["X-Forwarded-For"] = _forwarded_for(request)
    headers["X-Forwarded-Proto"] = settings.public_url.scheme
    headers["X-Forwarded-Host"] = settings.public_url.raw_authority
    return url, headers


def upstream_url(request: web.Request) -> URL:
    """The upstream URL of this request: its GATEWAY_UPSTREAMS entry (else GATEWAY_UPSTREAM) + the target, as sent."""
    routes = request.app[SETTINGS].upstream.table
    host = request_host(request.headers.get("Host")) if routes.has_hosts else None
    base = routes.lookup(request.raw_path.partition("?")[0], host)
    if base is None:
        raise web.HTTPNotFound()  # no upstream is configured for this path: never a guessed one
    return URL(str(base).rstrip("/") + request.raw_path, encoded=True)


def _forwarded_for(request: web.Request) -> str:
    """The client's address; behind a trusted proxy, the chain it sent with the proxy's own address appended."""
    peer = request.remote or ""
    # SECURITY: a client's own X-Forwarded-For is believed only from GATEWAY_TRUSTED_PROXIES (no spoofed origins).
    if request.app[SETTINGS].access.trusts(peer):
        sent = ", ".join(v.strip() for v in request.headers.getall("X-Forwarded-For", []) if v.strip())
        return f"{sent}, {peer}" if sent else peer
    return peer


async def proxy(request: web.Request) -> web.StreamResponse:
    """Forward the request as ``request[IDENTITY]`` (set by the identity middleware) says, and stream the answer."""
    url, headers = _upstream_request(request)
    settings = request.app[SETTINGS]
    if settings.streams.proxy_websockets and websocket_proxy.is_upgrade(request):
        return await websocket_proxy.proxy_websocket(request, url, headers)
    body = await request_body(request)  # sends the 100 Continue a client may wait for
    chunks = body.iter_any() if isinstance(body, StreamReader) else body
    client = request.app[UPSTREAM_CLIENT]
    # GATEWAY_UPSTREAM_TIMEOUT for the answer's head, from the request's last byte: the client's own timer.
    call = client.request(
        request.method, url, headers=headers, body=chunks, answer_timeout=settings.upstream.read_timeout
    )
    try:
        async with TimedUpstream(request, call) as upstream:
            return await _answer(request, upstream)
    except TimeoutError as exc:
        log.warning("upstream timed out: %s", streaming.describe(request))
        raise UpstreamTimeout() from exc
    except UpstreamConnectionError as exc:
        log.warning("upstream unavailable (%s): %s", exc.__class__.__name__, streaming.describe(request))
        raise UpstreamUnavailable() from exc


async def _answer(request: web.Request, upstream: Response) -> web.StreamResponse:
    """The upstream's answer for the client: whole when small, else streamed (a cut is logged, never raised)."""
    settings = request.app[SETTINGS]
    headers = request.app[HEADERS].downstream(upstream.headers)
    if _small(request, upstream):
        body = upstream.body_if_complete()  # usually all there already: no timeout scope to set up
        if body is None:
            async with asyncio.timeout(settings.upstream.read_timeout):
                body = await upstream.read()
        headers.popall("Content-Length", None)  # set again from the body, which is exactly what the upstream sized
        return web.Response(status=upstream.status, reason=upstream.reason, body=body, headers=headers)
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
    response.headers.extend(headers)
    await response.prepare(request)
    await streaming.copy_body(
        request,
        upstream,
        response,
        read_timeout=settings.upstream.read_timeout,
        idle_timeout=settings.streams.idle_timeout,
    )
    return response


def _small(request: web.Request, upstream: Response) -> bool:
    """A body the upstream sized at most SMALL_BODY bytes goes out with its head in one write, not streamed."""
    length = upstream.content_length
    return length is not None and length <= SMALL_BODY and request.method != "HEAD" and upstream.status >= 200
