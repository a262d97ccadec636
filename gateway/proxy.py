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
from yarl import URL

from .appkeys import SETTINGS, UPSTREAM_HTTP
from .auth import require_session
from .errors import BadRequest, UpstreamTimeout, UpstreamUnavailable
from .headers import downstream_response_headers, identity_headers, upstream_request_headers
from .session import UserSession

log = logging.getLogger("gateway.proxy")

CHUNK = 64 * 1024


async def proxy(request: web.Request) -> web.StreamResponse:
    outcome = await require_session(request)
    if not isinstance(outcome, UserSession):
        return outcome
    return await forward(request, outcome)


async def forward(request: web.Request, session: UserSession) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    raw_target = request.raw_path
    # SECURITY: only origin-form targets ("/path?query"); an absolute-form target ("http://other/") must not
    # choose what the upstream URL becomes.
    if not raw_target.startswith("/"):
        raise BadRequest("The request target must be a path.", code="invalid_target")
    base = settings.upstream.url
    url = URL(str(base).rstrip("/") + raw_target, encoded=True)

    headers = upstream_request_headers(
        request.headers,
        cookie_prefix=settings.session.cookie_name,
        pass_host_header=settings.upstream.pass_host_header,
    )
    headers.extend(identity_headers(session))
    headers["X-Forwarded-For"] = request.remote or ""
    headers["X-Forwarded-Proto"] = settings.public_url.scheme
    headers["X-Forwarded-Host"] = settings.public_url.raw_authority
    data = request.content if request.body_exists else None

    response: web.StreamResponse | None = None
    try:
        async with request.app[UPSTREAM_HTTP].request(
            request.method, url, headers=headers, data=data, allow_redirects=False
        ) as upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            response.headers.extend(downstream_response_headers(upstream.headers))
            await response.prepare(request)
            async for chunk in upstream.content.iter_chunked(CHUNK):
                await response.write(chunk)
            await response.write_eof()
            return response
    except TimeoutError as exc:
        if response is None:
            log.warning("upstream timed out: %s %s", request.method, request.path)
            raise UpstreamTimeout() from exc
        raise _abort(request, "timed out mid-response") from exc
    except aiohttp.ClientError as exc:
        if response is None:
            log.warning("upstream unavailable (%s): %s %s", exc.__class__.__name__, request.method, request.path)
            raise UpstreamUnavailable() from exc
        raise _abort(request, f"failed mid-response ({exc.__class__.__name__})") from exc


def _abort(request: web.Request, why: str) -> ConnectionResetError:
    """Headers are sent: the only honest signal left is to close the connection without finishing the body."""
    log.warning("upstream %s: %s %s", why, request.method, request.path)
    if request.transport is not None:
        request.transport.close()
    return ConnectionResetError(why)
