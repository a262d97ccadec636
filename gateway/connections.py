"""Connections: the bounds aiohttp's server does not set itself, enforced in front of it.

Every accepted connection gets a :class:`GuardedConnection`, an asyncio protocol that owns the aiohttp protocol
made by aiohttp's public factory (``runner.server()``) and hands it the bytes. It reads the request heads along
the way with httptools (llhttp, the parser aiohttp's own is built on) and stops a connection before aiohttp sees
the rest of a bad head:

- ``GATEWAY_HEADER_TIMEOUT``: a head that is not complete in time closes the connection (408 once a byte of it
  arrived). It counts from the connection's start, and from the first byte of every later head; aiohttp alone
  would wait for a trickled head for as long as its keep-alive timeout.
- limits on the request target (414), on one header line, the number of headers and the whole head (431), and
  a Content-Length over ``GATEWAY_MAX_BODY_SIZE`` (413, before a byte of the body is read);
- heads that do not parse get a 400 that says what is wrong and quotes nothing: aiohttp's own error page quotes
  the offending header line, cookie values included.
- ``GATEWAY_MAX_CONNECTIONS`` per process: at the limit the connection idle the longest (between keep-alive
  requests, or trickling a head) is closed to make room; when none is idle, the newcomer gets a 503.

aiohttp does all of HTTP itself; the guard only counts, times and stops. It learns that aiohttp has finished a
response from :func:`connection_middleware`, the outermost middleware, which completes each response itself and
closes the connection after a request whose body was not read, so that nobody's upload is drained for them.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import logging

import httptools
from aiohttp import web
from aiohttp.typedefs import Handler

from . import metrics
from .session_cookies import MAX_COOKIE_HEADER

log = logging.getLogger("gateway.connections")


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one connection may send; the defaults fit every browser and a cookie session of any size we write."""

    header_timeout: float = 20.0
    max_target: int = 8 * 1024  # the request target (path and query), 414 beyond
    max_field: int = MAX_COOKIE_HEADER  # a header's name or value: the gateway reads Cookie headers this long
    max_headers: int = 100  # header lines, 431 beyond
    max_head: int = 64 * 1024  # the whole head, 431 beyond
    max_body_size: int | None = None  # Content-Length beyond it: 413
    max_connections: int = 10_000


_REASONS = {
    400: "Bad Request",
    408: "Request Timeout",
    413: "Content Too Large",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


def answer(status: int, code: str, message: str) -> bytes:
    """A whole HTTP/1.1 response that closes the connection; it never contains a byte of the request."""
    body = json.dumps({"error": code, "message": message}).encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\nCache-Control: no-store\r\n"
        "X-Content-Type-Options: nosniff\r\n\r\n"
    )
    return head.encode() + body


class _Refused(Exception):
    """Raised from a parser callback to stop parsing; the reason is on the connection."""


class Registry:
    """The open connections of one process: for the connection limit, and for the drain on SIGTERM."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.connections: set[GuardedConnection] = set()
        self.idle: collections.OrderedDict[GuardedConnection, float] = collections.OrderedDict()  # oldest first
        self.draining = False

    def admit(self, conn: GuardedConnection) -> bool:
        """Take a new connection, closing the longest-idle one when at the limit; False: no room at all."""
        if len(self.connections) >= self.limits.max_connections:
            if not self.idle:
                return False
            oldest, _ = self.idle.popitem(last=False)
            log.warning("connection limit (%d) reached: closing the longest-idle connection", len(self.connections))
            oldest.close()
        self.connections.add(conn)
        metrics.set_open_connections(len(self.connections))
        return True

    def became_idle(self, conn: GuardedConnection, now: float) -> None:
        self.idle[conn] = now
        self.idle.move_to_end(conn)

    def became_busy(self, conn: GuardedConnection) -> None:
        self.idle.pop(conn, None)

    def forget(self, conn: GuardedConnection) -> None:
        self.connections.discard(conn)
        self.idle.pop(conn, None)
        metrics.set_open_connections(len(self.connections))

    def close_idle(self, idle_for: float, now: float) -> None:
        """While draining: close what has waited ``idle_for`` seconds without a request (keep-alive leftovers)."""
        for conn, since in list(self.idle.items()):
            if now - since >= idle_for and not conn.head_started:
                conn.close()


class GuardedConnection(asyncio.Protocol):
    """One client connection: aiohttp's protocol inside, heads checked and timed on the way in."""

    def __init__(self, inner: web.RequestHandler, registry: Registry, loop: asyncio.AbstractEventLoop) -> None:
        self.inner = inner
        self.registry = registry
        self.limits = registry.limits
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.bytes_received = 0
        self.forwarded = 0  # complete heads handed to aiohttp
        self.answered = 0  # responses aiohttp has finished (told by connection_middleware)
        self.passthrough = False  # after an upgrade (or CONNECT) head: the rest is aiohttp's alone
        self._parser = httptools.HttpRequestParser(self)
        self._admitted = False
        self._stopped = False
        self._timer: asyncio.TimerHandle | None = None
        self._problem: tuple[int, str, str] | None = None
        self._chunks = 0  # data_received calls so far, to tell where the current head began
        self._new_heads = 0  # heads completed in the chunk being parsed (not yet handed to aiohttp)
        self._new_messages = 0  # requests completed in it
        self._elsewhere = 0  # bytes of that chunk that belong to bodies and to heads already complete
        self._reset_head()
        self._head_chunk = 1

    # asyncio protocol ----------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio.Transport subclasses
        if not self.registry.admit(self):
            log.warning("connection limit (%d) reached and none idle: refusing", self.limits.max_connections)
            transport.write(answer(503, "too_many_connections", "The gateway is at its connection limit."))
            transport.close()
            self._stopped = True
            return
        self._admitted = True
        self.registry.became_idle(self, self.loop.time())
        self.inner.connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._stopped:
            return
        self.bytes_received += len(data)
        if self.passthrough:
            self.inner.data_received(data)
            return
        if not self._parse(data):
            return
        if self._new_heads:
            self.forwarded += self._new_heads
            self.registry.became_busy(self)
        self._new_heads = self._new_messages = 0  # handed on now
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self._admitted else None

    def connection_lost(self, exc: Exception | None) -> None:
        log.debug("connection closed after %d bytes received", self.bytes_received)
        self._disarm()
        self.registry.forget(self)
        self._stopped = True
        if self._admitted:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    # what the middleware and the registry call --------------------------------------------------------------
    @property
    def head_started(self) -> bool:
        return self._in_head and self._head_bytes > 0

    @property
    def is_idle(self) -> bool:
        return self.answered >= self.forwarded

    def response_done(self) -> None:
        self.answered += 1
        if self.is_idle and not self._stopped:
            self.registry.became_idle(self, self.loop.time())

    def close(self) -> None:
        self._stopped = True
        if self.transport is not None:
            self.transport.close()

    # parsing -----------------------------------------------------------------------------------------------
    def _parse(self, data: bytes) -> bool:
        """Feed httptools; False when the connection was stopped (the data must not reach aiohttp)."""
        self._chunks += 1
        self._new_heads = self._new_messages = 0
        self._elsewhere = 0
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.passthrough = True  # a WebSocket (or CONNECT): aiohttp decides; the middleware closes on a refusal
        except httptools.HttpParserError:
            self._refuse(*(self._problem or (400, "bad_request", "The request is not valid HTTP/1.1.")))
            return False
        if self._in_head and not self.passthrough:
            if self._head_chunk == self._chunks:  # begun in this chunk: what the finished parts left of it
                self._head_bytes = max(len(data) - self._elsewhere, 1)
            else:
                self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_head:
                self._refuse(431, "headers_too_large", "The request headers are too large.")
                return False
        return True

    def _reset_head(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        self._target = 0
        self._headers = 0
        self._header_bytes = 0
        self._head_chunk = self._chunks

    def on_message_begin(self) -> None:
        if self.forwarded or self._new_heads:
            self._reset_head()
            self._arm()

    def on_url(self, part: bytes) -> None:
        self._target += len(part)
        self._head_bytes = max(self._head_bytes, 1)
        if self._target > self.limits.max_target:
            self._stop_parsing(414, "uri_too_long", "The request target (path and query) is too long.")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers += 1
        self._header_bytes += len(name) + len(value) + 4
        if max(len(name), len(value)) > self.limits.max_field:  # as aiohttp's max_field_size counts
            self._stop_parsing(431, "header_too_large", "A request header is too large.")
        if self._headers > self.limits.max_headers:
            self._stop_parsing(431, "too_many_headers", "The request has too many headers.")
        limit = self.limits.max_body_size
        # llhttp has already refused a malformed or repeated Content-Length.
        if limit is not None and name.lower() == b"content-length" and int(value) > limit:
            self._stop_parsing(413, "body_too_large", f"The request body is larger than {limit} bytes.")

    def on_headers_complete(self) -> None:
        if self._target + self._header_bytes > self.limits.max_head:
            self._stop_parsing(431, "headers_too_large", "The request headers are too large.")
        self._in_head = False
        self._elsewhere += self._target + self._header_bytes + 16
        self._new_heads += 1
        self._disarm()

    def on_body(self, body: bytes) -> None:
        self._elsewhere += len(body)

    def on_message_complete(self) -> None:
        self._new_messages += 1

    def _stop_parsing(self, status: int, code: str, message: str) -> None:
        self._problem = (status, code, message)
        raise _Refused()

    def _refuse(self, status: int, code: str, message: str) -> None:
        """Stop reading; answer when aiohttp has nothing in hand, else let it finish its response and close."""
        self._stopped = True
        self._disarm()
        log.info("refused a request (%d %s) after %d bytes", status, code, self.bytes_received)
        unseen = self._in_head or self._new_heads > self._new_messages  # aiohttp has not seen this head
        if unseen and self.is_idle and not self._new_messages and self.transport is not None:
            # SECURITY: the answer is built from constants only; nothing the client sent is echoed.
            self.transport.write(answer(status, code, message))
            self.transport.close()
        elif self.is_idle or not unseen:
            # Broken mid-body (the stream is corrupt), or behind pipelined requests never handed on: aborting is
            # the honest signal, and a client retries what was not answered.
            self.close()
        else:
            self.inner.close()  # aiohttp finishes the pipelined request it is answering, then closes

    # the head timer ----------------------------------------------------------------------------------------
    def _arm(self) -> None:
        self._disarm()
        self._timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_timed_out(self) -> None:
        self._timer = None
        if not self._in_head or self._stopped:
            return
        if self._head_bytes == 0 and self.is_idle:
            self.close()  # nothing was sent (a browser's spare connection): just close
            return
        self._refuse(408, "request_timeout", "The request headers did not arrive in time.")


def guard_of(request: web.BaseRequest) -> GuardedConnection | None:
    """The guard of the connection ``request`` came on (None when the app runs without one, as in unit tests)."""
    transport = request.transport
    protocol = transport.get_protocol() if transport is not None else None
    return protocol if isinstance(protocol, GuardedConnection) else None


def _upgrade_refused(response: web.StreamResponse, conn: GuardedConnection | None) -> bool:
    # SECURITY: after an upgrade head the guard reads no further; if the handler refused the upgrade, what
    # follows was never checked, so the connection ends instead of aiohttp parsing it.
    return conn is not None and conn.passthrough and conn.answered + 1 == conn.forwarded and response.status != 101


async def _finish(request: web.BaseRequest, response: web.StreamResponse, conn: GuardedConnection | None) -> None:
    if not response.prepared:
        # SECURITY: a request answered without reading its body (a 401 to a 1 GiB upload) ends the connection, so
        # that the rest of the body is never read: aiohttp's lingering read is off (server.py).
        unread = request.body_exists and not request.content.is_eof()
        # While draining, every connection carries one more answer, which says it closes (a close without that
        # warning races the client's next request).
        draining = conn is not None and conn.registry.draining
        if unread or draining or _upgrade_refused(response, conn):
            response.force_close()
    elif _upgrade_refused(response, conn):
        assert conn is not None
        conn.inner.close()
    try:
        await response.prepare(request)
        await response.write_eof()
    except ConnectionError:
        pass  # the client left; aiohttp notices on its own


@web.middleware
async def connection_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: completes each response, decides whether the connection may carry another, tells the guard."""
    conn = guard_of(request)
    try:
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # a redirect raised past error_middleware
            await _finish(request, exc, conn)
            raise
        await _finish(request, response, conn)
        return response
    finally:
        if conn is not None:
            conn.response_done()
