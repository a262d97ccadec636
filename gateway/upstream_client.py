"""A lean pooled HTTP/1.1 client for the upstream: asyncio Protocols, httptools (llhttp) parses every response.

Why: aiohttp's ``ClientSession`` cost about a third of the gateway's CPU on the authenticated hot path (request
objects, URL handling, cookie/redirect/trace machinery the proxy never uses). This client does only what the proxy
needs: send a method, the raw target and the given headers; stream the body; parse the answer with httptools.
WebSockets still use aiohttp's client (``websocket_proxy``).

- Pool per (scheme, host, port): idle connections are reused newest first and closed after KEEPALIVE seconds,
  on ``Connection: close``, on an HTTP/1.0 answer without keep-alive, after a parse error or a body not read to
  its end. A request without a body that fails on a reused connection before any answer byte is sent once more
  on a fresh connection (a stale keep-alive connection, as aiohttp retries it).
- Errors: ``UpstreamConnectionError`` (refused, reset, broke off), with ``UpstreamCertificateError`` (an https
  upstream that did not verify) and ``UpstreamProtocolError`` (a bad or oversized head); a connect timeout is
  ``TimeoutError``, and so is an answer head that did not come within ``answer_timeout`` of the request's last
  byte (GATEWAY_UPSTREAM_TIMEOUT: a slow upload is not a slow answer). Timeouts between body chunks are the
  caller's (``streaming``). The answer deadline is one timer on the connection, not a timeout scope per request.
  An upload the upstream stops taking (its socket full) for ``answer_timeout`` is a TimeoutError as well.
- Limits mirror aiohttp's client: 8190 bytes a status line or header field, 128 header fields.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import AsyncIterator
from types import TracebackType

import httptools
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

KEEPALIVE = 30.0
MAX_LINE = 8190
MAX_FIELD = 8190
MAX_HEADERS = 128
MAX_HEAD = MAX_HEADERS * MAX_FIELD
HIGH_WATER = 256 * 1024  # buffered response bytes above which the upstream's socket is paused
_NO_BODY_STATUS = (204, 304)
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


class UpstreamConnectionError(Exception):
    """The upstream could not be reached, or broke the exchange off (no usable answer)."""


class UpstreamCertificateError(UpstreamConnectionError):
    """An https upstream whose certificate did not verify (named apart: it is a configuration problem)."""


class UpstreamProtocolError(UpstreamConnectionError):
    """The upstream's answer could not be parsed, or passed a limit."""


def serialise_head(method: str, target: str, host: str, headers: CIMultiDict[str], chunked: bool) -> bytes:
    """The request head; only serialising, never parsing. ``Host`` from the URL unless ``headers`` carry one."""
    lines = [f"{method} {target} HTTP/1.1"]
    if "Host" not in headers:
        lines.append(f"Host: {host}")
    lines.extend(f"{name}: {value}" for name, value in headers.items())
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    # SECURITY: refuse CR/LF/NUL inside the method, target or any header name or value (aiohttp's parser rejects
    # them on the way in; this guards the serialiser itself): one would let a header forge others (smuggling).
    joined = "".join(lines)
    if "\r" in joined or "\n" in joined or "\0" in joined:
        raise ValueError("CR, LF or NUL in the request head")
    head = "\r\n".join(lines)
    return (head + "\r\n\r\n").encode("utf-8", "surrogateescape")


class Response:
    """An upstream's answer: status, reason, headers; the body by ``read()`` or ``readany()`` (backpressured)."""

    def __init__(self, conn: _Connection, url: URL) -> None:
        self._conn = conn
        self.url = url
        self.status = 0
        self.reason = ""
        self.headers: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())
        self.content_length: int | None = None

    async def readany(self) -> bytes:
        """Whatever body bytes have arrived (waiting for some); b"" at the end."""
        return await self._conn.read_chunk()

    def body_if_complete(self) -> bytes | None:
        """The whole body when all of it has already arrived (a small answer, in the head's read), else None."""
        return self._conn.take_complete_body()

    async def read(self) -> bytes:
        parts = []
        while chunk := await self._conn.read_chunk():
            parts.append(chunk)
        return b"".join(parts)


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one exchange at a time. httptools calls the ``on_*`` methods while parsing."""

    def __init__(self, loop: asyncio.AbstractEventLoop, key: tuple[str, str, int]) -> None:
        self.loop = loop
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._drain: asyncio.Future[None] | None = None
        self._paused = False  # reading paused for backpressure (kept across exchanges: it is the socket's state)
        self._answer_timer: asyncio.TimerHandle | None = None
        # One parser for the connection's life: llhttp starts on the next answer after a complete one. A connection
        # is reused only after a complete, reusable answer, never after a HEAD (the parser would expect its body).
        self._parser = httptools.HttpResponseParser(self)
        self._reset(False)

    def _reset(self, head_only: bool) -> None:
        self._disarm()
        self._head_only = head_only
        self._response: Response | None = None
        self._head: asyncio.Future[Response] | None = None
        self._names: list[tuple[str, str]] = []
        self._field = 0
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._complete = False
        self._until_eof = False
        self._error: Exception | None = None
        self.got_bytes = False
        self._head_bytes = 0
        self.reusable = True

    def begin(self, response: Response, head_only: bool) -> asyncio.Future[Response]:
        self._reset(head_only)
        self._response = response
        self._head = self.loop.create_future()
        return self._head

    def answer_within(self, seconds: float | None) -> None:
        """The request's last byte is out: its answer head must come within ``seconds``, else TimeoutError."""
        if seconds is not None and self._head is not None and not self._head.done():
            self._answer_timer = self.loop.call_later(seconds, self._answer_late)

    def _answer_late(self) -> None:
        self._answer_timer = None
        if self._head is not None and not self._head.done():
            self._fail(TimeoutError("the upstream did not answer in time"))

    def _disarm(self) -> None:
        if self._answer_timer is not None:
            self._answer_timer.cancel()
            self._answer_timer = None

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio.Transport

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        if self._head is not None and not self._head.done():
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD:  # an endless header line that never reaches a callback
                self._fail(UpstreamProtocolError("the response head is too large"))
                return
        if self._head is None or self._complete:  # nothing asked: a stray byte makes the connection unusable
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamProtocolError("the upstream switched protocols unasked"))
        except (httptools.HttpParserError, UpstreamProtocolError) as exc:
            self._fail(exc if isinstance(exc, UpstreamProtocolError) else UpstreamProtocolError(str(exc)))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._until_eof and not self._complete and exc is None:
            self.on_message_complete()  # a body without length ends with the connection (a reset is a cut)
        elif not self._complete:
            self._fail(UpstreamConnectionError("the upstream closed the connection"))
        self._wake_drain(exc)

    def pause_writing(self) -> None:
        if self._drain is None:
            self._drain = self.loop.create_future()

    def resume_writing(self) -> None:
        self._wake_drain(None)

    def _wake_drain(self, exc: Exception | None) -> None:
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    # -- httptools callbacks
    def on_message_begin(self) -> None:
        # SECURITY: bytes after a complete answer, in the same read, would parse as a second answer and overwrite
        # this one's status and headers (response splitting by a mis-framed upstream): the connection is refused.
        if self._complete or (self._response is not None and self._response.status != 0):
            raise UpstreamProtocolError("the upstream sent more than one answer")

    def on_status(self, status: bytes) -> None:
        self._grow(len(status))
        assert self._response is not None
        self._response.reason = status.decode("utf-8", "surrogateescape")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._grow(len(name) + len(value))
        if len(self._names) >= MAX_HEADERS:
            raise UpstreamProtocolError("too many response header fields")
        self._names.append((name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape")))
        self._field = 0

    def _grow(self, size: int) -> None:
        self._field += size
        if self._field > MAX_FIELD:
            raise UpstreamProtocolError("a response header line is too long")

    def on_headers_complete(self) -> None:
        response, status = self._response, self._parser.get_status_code()
        assert response is not None and self._head is not None
        if status == 101:
            raise UpstreamProtocolError("the upstream switched protocols unasked")
        if 100 <= status < 200:
            self._names, self._field = [], 0  # an interim answer (100, 103): the real one follows
            return
        headers, self._names = CIMultiDict(self._names), []
        response.status, response.headers = status, CIMultiDictProxy(headers)
        length = headers.get("Content-Length")
        response.content_length = int(length) if length is not None and length.isdigit() else None
        self.reusable = self._parser.should_keep_alive() and not self._head_only
        no_body = self._head_only or status in _NO_BODY_STATUS
        chunked = "chunked" in headers.get("Transfer-Encoding", "").lower()
        self._until_eof = not no_body and length is None and not chunked
        if self._until_eof:
            self.reusable = False
        if not self._head.done():
            self._disarm()
            self._head.set_result(response)
        if self._head_only:
            self.on_message_complete()

    def on_body(self, body: bytes) -> None:
        if self._head_only or self._complete:
            return
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and self.transport is not None and not self._paused:
            self._paused = True
            self.transport.pause_reading()  # backpressure: the client has not taken what came
        self._wake()

    def on_message_complete(self) -> None:
        if self._response is not None and self._response.status == 0:
            return  # the end of an interim answer
        self._complete = True
        self._wake()

    def _fail(self, exc: Exception) -> None:
        self._disarm()
        self._error, self.reusable = exc, False
        if self._head is not None and not self._head.done():
            self._head.set_exception(exc)
            self._head.exception()  # retrieved here; the caller re-raises it from its own await
        self._wake()
        self.close()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- used by the client
    async def read_chunk(self) -> bytes:
        while not self._chunks:
            if self._complete:
                return b""
            if self._error is not None:
                raise self._error
            self._waiter = self.loop.create_future()
            await self._waiter
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._paused and self._buffered <= HIGH_WATER // 2 and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()
        return chunk

    def take_complete_body(self) -> bytes | None:
        if not self._complete or self._error is not None:
            return None
        body = b"".join(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        return body

    @property
    def finished(self) -> bool:
        return self._complete and not self._chunks and self._error is None

    async def write(self, data: bytes, stall_timeout: float | None = None) -> None:
        """Write, then wait while the upstream's socket is full: TimeoutError after ``stall_timeout`` in which our
        buffer did not shrink (a slow upstream that keeps reading is waited for). The kernel takes bytes from the
        buffer in batches of about a third of its send buffer, so "progress" means that much within the bound."""
        if self.closed or self.transport is None or self.transport.is_closing():
            raise UpstreamConnectionError("the upstream connection is closed")
        self.transport.write(data)
        drain = self._drain
        if drain is None:
            return
        # SECURITY: an upstream that stops reading (and never answers) would otherwise hold the client's
        # connection and its buffers for as long as the client waits.
        waiting = self.transport.get_write_buffer_size()
        while not drain.done():
            done, _ = await asyncio.wait((drain,), timeout=stall_timeout)
            if done or self.transport is None:
                return
            left = self.transport.get_write_buffer_size()
            if left >= waiting:
                raise TimeoutError("the upstream took nothing of the request for the upstream timeout")
            waiting = left

    def close(self) -> None:
        self.closed = True
        self._disarm()
        if self.transport is not None:
            self.transport.close()


class _Exchange:
    """``async with client.request(...) as response``: on exit the connection goes back to the pool, or is closed."""

    def __init__(
        self,
        client: UpstreamClient,
        args: tuple[str, URL, CIMultiDict[str], AsyncIterator[bytes] | None],
        answer_timeout: float | None,
    ):
        self._client, self._args, self._answer_timeout = client, args, answer_timeout
        self._conn: _Connection | None = None
        self._sender: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Response:
        method, url, headers, body = self._args
        for attempt in (0, 1):
            conn, reused = await self._client._acquire(url, fresh=attempt == 1)
            self._conn = conn
            try:
                return await self._send(conn, method, url, headers, body)
            except UpstreamConnectionError:
                self._abandon()
                # A stale keep-alive connection: replayed once on a new one, only for an idempotent request without
                # a body (RFC 9110 9.2.2): the upstream may have acted on it before it closed.
                if attempt or not reused or body is not None or conn.got_bytes or method not in IDEMPOTENT:
                    raise
            except BaseException:
                self._abandon()
                raise
        raise AssertionError("unreachable")

    async def _send(
        self, conn: _Connection, method: str, url: URL, headers: CIMultiDict[str], body: AsyncIterator[bytes] | None
    ) -> Response:
        response = Response(conn, url)
        answered = conn.begin(response, head_only=method == "HEAD")
        chunked = body is not None and "Content-Length" not in headers
        head = serialise_head(method, url.raw_path_qs, _host(url), headers, chunked)
        if body is None:
            await conn.write(head, self._answer_timeout)
            conn.answer_within(self._answer_timeout)
            return await answered
        self._sender = asyncio.ensure_future(_send_body(conn, head, body, chunked, self._answer_timeout))
        done, _ = await asyncio.wait((answered, self._sender), return_when=asyncio.FIRST_COMPLETED)
        if self._sender in done and self._sender.exception() is not None:
            conn.close()
            raise self._sender.exception()  # type: ignore[misc]  # PayloadTooLarge, or the connection went away
        return await answered

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        conn, sender = self._conn, self._sender
        if conn is None:
            return
        sent = sender is None or (sender.done() and not sender.cancelled() and sender.exception() is None)
        if kind is None and sent and conn.finished and conn.reusable and not conn.closed:
            self._client._release(conn)
        else:
            self._abandon()

    def _abandon(self) -> None:
        if self._sender is not None and not self._sender.done():
            self._sender.cancel()
        if self._conn is not None:
            self._conn.close()


async def _send_body(
    conn: _Connection, head: bytes, body: AsyncIterator[bytes], chunked: bool, answer_timeout: float | None
) -> None:
    """Head and first chunk in one write; then the rest as it arrives (chunk-framed when no length was given).
    The answer deadline starts after the last byte (an upstream may also answer before it, and often does); an
    upstream that takes no bytes of it for as long is given up on too (TimeoutError)."""
    first = True
    async for chunk in body:
        if not chunk:
            continue
        data = b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk
        await conn.write(head + data if first else data, answer_timeout)
        first = False
    end = b"0\r\n\r\n" if chunked else b""
    if first or end:
        await conn.write(head + end if first else end, answer_timeout)
    conn.answer_within(answer_timeout)


def _host(url: URL) -> str:
    """The Host header aiohttp sends: the host, with the port when it is not the scheme's default."""
    host = url.raw_host or ""
    if ":" in host:
        host = f"[{host}]"
    return host if url.is_default_port() else f"{host}:{url.port}"


class UpstreamClient:
    """The shared pool; one per application (``cleanup_ctx`` closes it)."""

    def __init__(self, *, ssl_context: ssl.SSLContext | None, connect_timeout: float | None) -> None:
        self._ssl = ssl_context
        self._connect_timeout = connect_timeout
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    def request(
        self,
        method: str,
        url: URL,
        *,
        headers: CIMultiDict[str],
        body: AsyncIterator[bytes] | None = None,
        answer_timeout: float | None = None,
    ) -> _Exchange:
        """``answer_timeout``: seconds from the request's last byte to the answer's head (None: no bound)."""
        return _Exchange(self, (method, url, headers, body), answer_timeout)

    async def _acquire(self, url: URL, *, fresh: bool = False) -> tuple[_Connection, bool]:
        """The newest idle connection still open, else a new one (True: it was reused). ``fresh``: after a stale
        one, the others of that upstream are likely stale too (it restarted): they are closed, a new one is made."""
        if self._closed:
            raise UpstreamConnectionError("the upstream client is closed")
        key = (url.scheme, url.raw_host or "", url.port or 0)
        if fresh:
            for stale in self._idle.pop(key, []):
                stale.close()
        idle = self._idle.get(key)
        loop = asyncio.get_running_loop()
        while idle:
            conn = idle.pop()
            if not conn.closed and loop.time() - conn.idle_since < KEEPALIVE:
                return conn, True
            conn.close()
        return await self._connect(loop, key), False

    async def _connect(self, loop: asyncio.AbstractEventLoop, key: tuple[str, str, int]) -> _Connection:
        scheme, host, port = key
        tls = scheme == "https"
        # SECURITY: an https upstream is verified with tls.upstream_context, against its own host name.
        context = (self._ssl or ssl.create_default_context()) if tls else None
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop, key), host, port, ssl=context, server_hostname=host if tls else None
                )
        except TimeoutError:
            raise  # GATEWAY_UPSTREAM_CONNECT_TIMEOUT: a 504, not "unavailable" (TimeoutError is an OSError)
        except ssl.SSLCertVerificationError as exc:
            raise UpstreamCertificateError(f"the upstream's certificate did not verify: {exc.verify_message}") from exc
        except OSError as exc:
            raise UpstreamConnectionError(f"cannot connect to the upstream: {exc.__class__.__name__}") from exc
        return conn

    def _release(self, conn: _Connection) -> None:
        if self._closed:
            conn.close()
            return
        loop = conn.loop
        conn.idle_since = loop.time()
        self._idle.setdefault(conn.key, []).append(conn)
        if self._sweeper is None:
            self._sweeper = loop.call_later(KEEPALIVE / 3, self._sweep)

    def _sweep(self) -> None:
        """Close connections idle for KEEPALIVE seconds; runs while any connection is idle."""
        self._sweeper = None
        now, left = asyncio.get_running_loop().time(), 0
        for key, idle in self._idle.items():
            keep = [c for c in idle if not c.closed and now - c.idle_since < KEEPALIVE]
            for conn in idle:
                if conn not in keep:
                    conn.close()
            self._idle[key], left = keep, left + len(keep)
        if left and not self._closed:
            self._sweeper = asyncio.get_running_loop().call_later(KEEPALIVE / 3, self._sweep)

    async def close(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
