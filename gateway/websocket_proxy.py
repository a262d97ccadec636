"""WebSocket upgrades, proxied with the same identity, rules and header hygiene as any other request.

The identity middleware has run before this module: an upgrade without a valid identity got the usual 401/302
and never reaches the upstream. What happens here, in this order:

1. The Origin check (403 before the upstream is contacted): a browser always sends ``Origin`` on a WebSocket
   handshake, and a page on another site could otherwise open a socket that carries the user's cookie
   (cross-site WebSocket hijacking). Allowed: GATEWAY_PUBLIC_URL's origin, GATEWAY_WEBSOCKET_ORIGINS, no Origin at
   all (non-browser clients send none), and any Origin when the identity is a Bearer token (a page cannot put an
   Authorization header on a WebSocket, so there is no ambient credential to hijack).
2. The handshake check (400 when it is not a WebSocket handshake aiohttp could answer).
3. The upstream's handshake, on the shared upstream ``ClientSession``, with the proxy's URL and headers and the
   client's subprotocols; a refusal is relayed as an HTTP answer (4xx as itself, anything else 502), a failure is a
   502/504 like any request's.
4. The client's handshake, answered with the subprotocol the upstream chose, then the relay (``_relay``).

Bounded buffers: each direction holds one message at a time. The next message is read only once the write to
the other side has completed; aiohttp's reader pauses its socket when its queue fills and its writer waits for
the socket to drain, so a slow reader slows the sender down instead of growing the gateway's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import WSCloseCode, WSMsgType, web
from multidict import CIMultiDict
from yarl import URL

from . import metrics
from .appkeys import OPEN_WEBSOCKETS, SETTINGS, UPSTREAM_HTTP
from .errors import BadRequest, GatewayError, UpstreamTimeout, UpstreamUnavailable
from .identity import IDENTITY
from .origins import serialized_origin
from .streaming import describe

log = logging.getLogger("gateway.websocket")

# The largest message relayed in either direction (aiohttp's default is 4 MiB; notebooks send bigger outputs).
# A bigger one closes its sender with 1009 (Message Too Big), and the other side as if the sender were lost.
MAX_MESSAGE = 16 * 1024**2
# Close codes that may be sent in a close frame (RFC 6455 7.4); 1005, 1006 and 1015 are only ever reported locally.
_SENDABLE = frozenset({1000, 1001, 1002, 1003, *range(1007, 1015)})
# What the other side is told when one side is lost without a close frame.
_LOST = {"client": WSCloseCode.GOING_AWAY, "upstream": WSCloseCode.BAD_GATEWAY}


class UpstreamRefusedWebSocket(GatewayError):
    """The upstream answered the handshake with a 4xx: relayed with that status, so the app's "no" stays a no."""

    title = "WebSocket refused"
    outcome = "proxied"  # the upstream answered: its refusal is relayed, as any other answer of its

    def __init__(self, status: int) -> None:
        super().__init__(f"The application refused the WebSocket connection (HTTP {status}).", code="websocket_refused")
        self.status = status


class OriginRefused(GatewayError):
    """403: the handshake comes from a page of an origin that may not use this user's cookie."""

    status = 403
    title = "Origin not allowed"
    outcome = "forbidden"

    def __init__(self) -> None:
        super().__init__("This WebSocket was opened from a page of another site.", code="origin_not_allowed")


def is_upgrade(request: web.Request) -> bool:
    """The client asks for a WebSocket (``Upgrade: websocket``); whether the handshake is valid is checked later."""
    return request.headers.get("Upgrade", "").strip().lower() == "websocket"


def install(app: web.Application) -> None:
    """Keep track of open relays, so that a shutdown closes them with 1001 instead of waiting for them to end."""
    app[OPEN_WEBSOCKETS] = set()
    app.on_shutdown.append(close_all)


async def close_all(app: web.Application) -> None:
    """Close every open relay with 1001 (going away): at the start of a drain, and at shutdown. A WebSocket never
    ends by itself, so the drain does not wait for it; its client reconnects to another instance."""
    for stopping in list(app.get(OPEN_WEBSOCKETS, ())):
        stopping.set()


def check_origin(request: web.Request) -> None:
    """Raise OriginRefused unless the handshake's Origin may open a socket with this request's credentials."""
    identity = request[IDENTITY]
    if identity is not None and identity.via == "bearer":
        return  # a Bearer token is sent on purpose by its holder; a page cannot attach one to a WebSocket
    origins = request.headers.getall("Origin", [])
    if not origins:
        return  # not a browser: browsers always send Origin on a WebSocket handshake
    streams = request.app[SETTINGS].streams
    allowed = streams.websocket_origins | {str(request.app[SETTINGS].public_url.origin())}
    # SECURITY: cross-site WebSocket hijacking: the cookie rides along whichever page opens the socket.
    if len(origins) > 1 or serialized_origin(origins[0]) not in allowed:
        log.warning("refused a WebSocket from Origin %r: %s", origins[0][:100], describe(request))
        raise OriginRefused()


def _client_protocols(request: web.Request) -> list[str]:
    values = request.headers.getall("Sec-WebSocket-Protocol", [])
    return [token.strip() for value in values for token in value.split(",") if token.strip()]


def _handshake_headers(headers: CIMultiDict[str]) -> CIMultiDict[str]:
    """The proxy's upstream headers without the client's handshake: ``ws_connect`` makes its own key, version,
    extensions and protocol list, and a copied ``Sec-WebSocket-Extensions`` would negotiate what it cannot speak."""
    outgoing: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        if not name.lower().startswith("sec-websocket-"):
            outgoing.add(name, value)
    return outgoing


async def _connect_upstream(
    request: web.Request, url: URL, headers: CIMultiDict[str]
) -> aiohttp.ClientWebSocketResponse:
    """The upstream's half, before the client's handshake is answered, so that its refusal can still be relayed."""
    try:
        return await request.app[UPSTREAM_HTTP].ws_connect(
            url,
            headers=_handshake_headers(headers),
            protocols=_client_protocols(request),
            heartbeat=request.app[SETTINGS].streams.websocket_heartbeat,
            autoclose=False,  # the relay closes each side with the code and reason of the other
            max_msg_size=MAX_MESSAGE,
            compress=0,  # the client's side negotiates compression with the browser; this hop does not need it
        )
    except aiohttp.WSServerHandshakeError as exc:
        log.warning("upstream refused the WebSocket (HTTP %s): %s", exc.status, describe(request))
        if 400 <= exc.status < 500:
            raise UpstreamRefusedWebSocket(exc.status) from exc
        raise UpstreamUnavailable("The application did not accept the WebSocket connection.") from exc
    except TimeoutError as exc:
        log.warning("upstream timed out on a WebSocket handshake: %s", describe(request))
        raise UpstreamTimeout() from exc
    except aiohttp.ClientError as exc:
        log.warning("upstream unavailable for a WebSocket (%s): %s", exc.__class__.__name__, describe(request))
        raise UpstreamUnavailable() from exc


async def proxy_websocket(request: web.Request, url: URL, headers: CIMultiDict[str]) -> web.StreamResponse:
    """Relay a WebSocket between the client and ``url``; ``headers`` are the proxy's, identity included."""
    check_origin(request)
    settings = request.app[SETTINGS].streams
    try:
        valid = request.method == "GET" and web.WebSocketResponse().can_prepare(request).ok
    except ValueError:  # SECURITY: a non-ASCII Sec-WebSocket-Key makes aiohttp's check raise: a 400, not a 500
        valid = False
    if not valid:
        raise BadRequest("This is not a valid WebSocket handshake.", code="invalid_websocket_handshake")
    upstream = await _connect_upstream(request, url, headers)
    client = web.WebSocketResponse(
        protocols=[upstream.protocol] if upstream.protocol else [],
        heartbeat=settings.websocket_heartbeat,
        autoclose=False,
        max_msg_size=MAX_MESSAGE,
    )
    try:
        await client.prepare(request)
    except ConnectionError:
        await upstream.close(code=WSCloseCode.GOING_AWAY)
        log.warning("websocket cut: the client went away during the handshake: %s", describe(request))
        return client
    async with _registered(request.app) as stopping:
        end = await _relay(client, upstream, idle=settings.idle_timeout, stopping=stopping)
    if end.cut:
        log.warning("websocket cut: %s: %s", end.why, describe(request))
    else:
        log.debug("websocket closed by the %s (%s): %s", end.by, end.code, describe(request))
    return client


@contextlib.asynccontextmanager
async def _registered(app: web.Application) -> AsyncIterator[asyncio.Event]:
    """An event in the app's set of open relays for as long as the relay runs; a shutdown sets it."""
    stopping = asyncio.Event()
    app[OPEN_WEBSOCKETS].add(stopping)
    metrics.websocket_opened()
    try:
        yield stopping
    finally:
        app[OPEN_WEBSOCKETS].discard(stopping)
        metrics.websocket_closed()


@dataclasses.dataclass(frozen=True)
class _End:
    """How a relay ended: who ended it (``client``, ``upstream`` or ``gateway``), the close code and reason the
    other side is told, and, for a cut (no close frame: lost, broken, idle, shutdown), what happened."""

    by: str
    code: int
    reason: str = ""
    why: str = ""

    @property
    def cut(self) -> bool:
        return bool(self.why)


def _sendable(code: int | None) -> int:
    """A close code the other side may be sent; "no code" (0, 1005) and the local-only ones become 1000."""
    if code is not None and (code in _SENDABLE or 3000 <= code <= 4999):
        return code
    return WSCloseCode.OK


def _lost(side: str, detail: str = "") -> _End:
    why = f"the {side} went away without a close frame" + (f" ({detail})" if detail else "")
    return _End(side, _LOST[side], why=why)


WebSocket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse


async def _pump(source: WebSocket, sink: WebSocket, side: str, activity: _Activity) -> _End:
    """Copy ``side``'s messages to the other side, one at a time, until ``side`` closes or is lost."""
    other = "upstream" if side == "client" else "client"
    while True:
        message = await source.receive()
        if message.type is WSMsgType.CLOSE:
            return _End(side, _sendable(message.data), message.extra or "")
        if message.type is WSMsgType.ERROR:
            return _lost(side, f"{message.data.__class__.__name__}: {str(message.data)[:120]}")
        if message.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
            return _lost(side)  # CLOSED, or CLOSING because the relay is closing this side itself
        try:
            if message.type is WSMsgType.TEXT:
                await sink.send_str(message.data)
            else:
                await sink.send_bytes(message.data)
        except (ConnectionError, aiohttp.ClientError):
            return _lost(other)
        activity.touch()


class _Activity:
    """When a message last crossed the relay, either way; pings and pongs do not count (the heartbeat's own)."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.last = self._loop.time()

    def touch(self) -> None:
        self.last = self._loop.time()

    async def idle_for(self, seconds: float) -> _End:
        # A deadline that every message moves: sleeping until it, then looking again, costs nothing per message.
        while (left := self.last + seconds - self._loop.time()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(left)
        why = f"no message either way for {seconds:g}s (GATEWAY_STREAM_IDLE_TIMEOUT)"
        return _End("gateway", WSCloseCode.GOING_AWAY, "idle timeout", why=why)


async def _stopped(stopping: asyncio.Event) -> _End:
    await stopping.wait()
    return _End("gateway", WSCloseCode.GOING_AWAY, "gateway shutting down", why="the gateway is shutting down")


async def _relay(
    client: web.WebSocketResponse,
    upstream: aiohttp.ClientWebSocketResponse,
    *,
    idle: float | None,
    stopping: asyncio.Event,
) -> _End:
    """Both directions until one side ends; then the other side is closed with the same code and reason."""
    activity = _Activity()
    waits = [
        _pump(client, upstream, "client", activity),
        _pump(upstream, client, "upstream", activity),
        _stopped(stopping),
        *([activity.idle_for(idle)] if idle is not None else []),
    ]
    tasks = [asyncio.create_task(wait) for wait in waits]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        end = next(task for task in tasks if task in done).result()
        await _close(client, upstream, end)
        return end
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(client.close(), upstream.close(), return_exceptions=True)


async def _close(client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse, end: _End) -> None:
    """Close the side that did not end first, then answer the one that did with the same code (an echo)."""
    reason = end.reason.encode()[:123].decode(errors="ignore").encode()  # a close frame's reason: 123 bytes
    first, second = (upstream, client) if end.by == "client" else (client, upstream)
    if end.by == "gateway":
        await asyncio.gather(first.close(code=end.code, message=reason), second.close(code=end.code, message=reason))
        return
    await first.close(code=end.code, message=reason)
    await second.close(code=end.code, message=reason)
