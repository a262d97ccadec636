"""Request bodies: read only for requests the gateway lets through, and only as much as it allows.

- ``Expect: 100-continue``: aiohttp's router would send ``100 Continue`` from the route's expect handler, before
  any middleware runs, inviting the body of a request that is then refused. :func:`expect_later` (every route's
  expect handler) sends nothing; :func:`request_body` sends the 100 itself once the identity middleware has let
  the request through, just before the proxy reads the body. A refused client gets its 401/302/403 instead.
- ``GATEWAY_MAX_BODY_SIZE``: a Content-Length over it is refused by the connection guard before the head reaches
  aiohttp (``connections``); a chunked body is counted as it streams, and :class:`PayloadTooLarge` (413) ends
  the request once it passes the bound.
- The body is streamed as it arrived: the server does not decompress a ``Content-Encoding: gzip`` body
  (``auto_decompress=False`` in ``server``), so the upstream gets the client's bytes under the client's header.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.streams import StreamReader

from .appkeys import SETTINGS
from .errors import GatewayError

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class PayloadTooLarge(GatewayError):
    status = 413
    title = "Request too large"
    outcome = "http_error"  # as the connection guard's 413 for a declared Content-Length

    def __init__(self, limit: int) -> None:
        super().__init__(f"The request body is larger than {limit} bytes.", code="body_too_large")


async def expect_later(request: web.Request) -> None:
    """Every route's expect handler: no ``100 Continue`` before the request has been let through."""
    return None


async def _bounded(content: StreamReader, limit: int) -> AsyncIterator[bytes]:
    seen = 0
    async for chunk in content.iter_any():
        seen += len(chunk)
        if seen > limit:
            raise PayloadTooLarge(limit)
        yield chunk


async def invite_body(request: web.Request) -> None:
    """The ``100 Continue`` a client that sent ``Expect: 100-continue`` waits for, once it has been let through."""
    if request.version >= (1, 1) and request.headers.get("Expect", "").lower() == "100-continue":
        await request.writer.write(CONTINUE)
        request.writer.output_size = 0  # the response itself has not started (as aiohttp's own handler does)


async def request_body(request: web.Request) -> StreamReader | AsyncIterator[bytes] | None:
    """The body to send upstream (None: there is none), after the ``100 Continue`` the client waits for."""
    if not request.body_exists:
        return None
    await invite_body(request)
    limit = request.app[SETTINGS].server.max_body_size
    return request.content if limit is None else _bounded(request.content, limit)
