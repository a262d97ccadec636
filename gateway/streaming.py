"""Streamed responses: every upstream chunk reaches the client as soon as it arrives, and a cut stream is one line.

Timing. The upstream's answer (status line and headers) must come within GATEWAY_UPSTREAM_TIMEOUT of the request
being sent, counted from the end of the request body, so a slow upload is never a slow answer. Between two chunks
of the body, an ordinary response gets GATEWAY_UPSTREAM_TIMEOUT again, a *stream* gets GATEWAY_STREAM_IDLE_TIMEOUT:
Server-Sent Events, long polls and other bodies of unknown length are quiet for minutes by design. The head's
bound is the upstream client's (``answer_timeout``, one timer); the body's are ``asyncio.timeout`` scopes
rescheduled around each read, so waiting for the client to take a chunk (backpressure) never counts against the
upstream.

No buffering: ``Response.readany()`` returns whatever bytes have arrived (it never waits to fill a chunk), and each
is written to the client at once.

Cuts. Once the headers are out, a failure can only be told by closing the client's connection before the body's
end. That is done here, with one WARNING naming the request, and the handler then returns normally: an exception
would make aiohttp log an ``Error handling request`` traceback for what is an everyday event (a closed tab).
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from aiohttp import web

from .observe import response_broke_off
from .upstream_client import Response, UpstreamConnectionError

log = logging.getLogger("gateway.streaming")
_QUIET = "quiet"


def is_stream(request: web.Request, upstream: Response) -> bool:
    """SSE, or a body of unknown length (chunked, or read until the connection closes)."""
    if request.method == "HEAD" or upstream.status < 200 or upstream.status in (204, 304):
        return False
    content_type = upstream.headers.get("Content-Type", "").partition(";")[0].strip().lower()
    return content_type == "text/event-stream" or "Content-Length" not in upstream.headers


def describe(request: web.Request) -> str:
    # SECURITY: the path without its query (tokens), still percent-encoded (a decoded %0A would forge a log line).
    return f"{request.method} {request.rel_url.raw_path[:300]}"


def cut(request: web.Request, why: str) -> None:
    """The one line a cut stream leaves in the log; the connection is closed so the client sees an unfinished body."""
    log.warning("stream cut: %s: %s", why, describe(request))
    response_broke_off(request)
    if request.transport is not None:
        request.transport.close()


async def copy_body(
    request: web.Request,
    upstream: Response,
    response: web.StreamResponse,
    *,
    read_timeout: float,
    idle_timeout: float | None,
) -> None:
    """Copy the upstream's body to the prepared ``response`` chunk by chunk; a cut is logged, never raised."""
    stream = is_stream(request, upstream)
    bound = idle_timeout if stream else read_timeout
    why = await _copy(upstream, response, bound)
    if why == _QUIET:
        setting = "GATEWAY_STREAM_IDLE_TIMEOUT" if stream else "GATEWAY_UPSTREAM_TIMEOUT"
        why = f"the upstream sent nothing for {bound:g}s ({setting})"
    if why is not None:
        cut(request, why)


async def _copy(upstream: Response, response: web.StreamResponse, bound: float | None) -> str | None:
    """None when the whole body went through; else why not (``_QUIET``: nothing came within ``bound``)."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(None) as deadline:
            while True:
                deadline.reschedule(None if bound is None else loop.time() + bound)
                try:
                    chunk = await upstream.readany()
                except UpstreamConnectionError as exc:
                    return f"the upstream broke off the response ({exc.__class__.__name__})"
                deadline.reschedule(None)  # the client taking its time is backpressure, not a quiet upstream
                if not chunk:
                    break
                try:
                    await response.write(chunk)
                except (ConnectionError, aiohttp.ClientError):
                    return "the client went away"
    except TimeoutError:
        return _QUIET
    try:
        await response.write_eof()
    except (ConnectionError, aiohttp.ClientError):
        return "the client went away"
    return None
