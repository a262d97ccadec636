"""Serving in one process: aiohttp's runner behind the connection guard, and the drain on SIGTERM.

``serve()`` runs the app on a listening socket. aiohttp's public pieces do the HTTP (``web.AppRunner`` and the
protocol factory ``runner.server``); ``connections.GuardedConnection`` wraps every connection it makes, and
``connections.connection_middleware`` goes first in the app's middleware list. The server is configured so that:

- a request body is read only by a handler that wants it: no lingering read after an answer (``lingering_time=0``;
  the middleware marks such answers ``Connection: close``), and no decompression (``auto_decompress=False``: the
  proxy forwards the bytes the client sent, under the client's ``Content-Encoding``);
- an idle keep-alive connection closes after ``GATEWAY_KEEPALIVE_TIMEOUT`` (aiohttp's default is an hour);
- aiohttp's own head limits sit above the guard's, so the guard's clean 414/431 answers come first.

The drain, on SIGTERM or SIGINT: the listening socket closes at once (a second instance sharing the port through
SO_REUSEPORT, or the next pod, takes the new connections); after ``DRAIN_SETTLE`` (so that every worker of this
instance has closed its listener too) each connection carries one more answer, marked ``Connection: close``,
idle ones are closed, in-flight requests and streams run on; what is still running when
``GATEWAY_SHUTDOWN_TIMEOUT`` ends is cancelled. Then the process exits 0.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import ssl
from collections.abc import Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from . import logs, websocket_proxy
from .access_log import AccessLogger
from .config import Settings
from .connections import GuardedConnection, Limits, Registry, connection_middleware

log = logging.getLogger("gateway.server")

DRAIN_SETTLE = 0.5  # workers: between closing the listener and asking connections to close
DRAIN_IDLE_GRACE = 1.0  # while draining, a connection idle this long is closed instead of waited for
CANCEL_GRACE = 1.0  # of the shutdown timeout: what aiohttp gets to cancel the handlers still running
BACKLOG = 1024
GC_YOUNG_THRESHOLD = 10_000  # container allocations between young collections (CPython's default: 700)


def tune_gc() -> None:
    """Once serving starts: what exists then (modules, settings, the app) lives as long as the process.

    A request allocates hundreds of short-lived containers, nearly all freed by reference counting. At CPython's
    default threshold a young collection still ran about a hundred times a second, and every full collection
    walked all the startup objects again: together about 5% of a worker's CPU under load. ``gc.freeze()`` moves
    the startup objects out of the collector's sight, and the higher young threshold lets requests' garbage go by
    reference counting first. Reference cycles are still collected, only in larger batches.
    """
    gc.collect()  # startup's own garbage goes first, rather than being frozen with the rest
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    gc.freeze()


def limits(settings: Settings) -> Limits:
    server = settings.server
    return Limits(
        header_timeout=server.header_timeout,
        max_body_size=server.max_body_size,
        max_connections=server.max_connections,
    )


def listen_socket(host: str, port: int, *, listen: bool = True) -> socket.socket:
    """A socket on host:port that a second instance (a rolling update on one host) or a sibling worker can share.

    SO_REUSEPORT: the kernel spreads new connections over every listener on the port, so the old instance can
    stop accepting while the new one already does. Only processes of the same user can join (Linux).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
        if listen:
            sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """GATEWAY_EVENT_LOOP: uvloop (libuv's loop; its transports write and read with less Python per request, see
    bench/README.md) or the standard library's."""
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def runner_for(app: web.Application, settings: Settings) -> web.AppRunner:
    guard = limits(settings)
    return web.AppRunner(
        app,
        access_log_class=AccessLogger,
        shutdown_timeout=CANCEL_GRACE,
        keepalive_timeout=settings.server.keepalive_timeout,
        # SECURITY: after an answer that did not read the body, do not read it anyway (aiohttp would for 10 s).
        lingering_time=0,
        # SECURITY: the body goes upstream as sent; decompressing it here would also be a zip bomb's door.
        auto_decompress=False,
        # aiohttp's limits, above the guard's: the guard answers first, aiohttp's never quote a header.
        max_line_size=guard.max_target + 1024,
        max_field_size=2 * guard.max_field,
        max_headers=2 * guard.max_headers,
    )


class _NoRequestQuotes(logging.Filter):
    """aiohttp logs a parser error with its message, which can quote a header line (a cookie): log its kind only."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            # SECURITY: no header value (cookie, Authorization) in the log.
            record.msg, record.args, record.exc_info = "refused a malformed request (%s)", (type(exc).__name__,), None
        return True


def configure_logging(settings: Settings, label: str) -> None:
    """Every line names the process it comes from: ``main``, ``supervisor`` or ``worker N`` (``logs``)."""
    logs.configure(settings, process=label)
    logging.getLogger("aiohttp.server").addFilter(_NoRequestQuotes())


async def serve(
    app: web.Application,
    settings: Settings,
    sock: socket.socket,
    context: ssl.SSLContext | None,
    *,
    settle: float = 0.0,
    parent: int | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT, then drain. ``settle``: how long sibling workers may take to stop accepting;
    ``parent``: the supervisor's pid: a worker whose supervisor died (SIGKILL) drains instead of serving on alone."""
    loop = asyncio.get_running_loop()
    app.middlewares.insert(0, connection_middleware)  # outermost: it completes every response
    runner = runner_for(app, settings)
    await runner.setup()
    registry = Registry(limits(settings))
    protocols = runner.server
    assert protocols is not None
    listener = await loop.create_server(
        lambda: GuardedConnection(protocols(), registry, loop), sock=sock, ssl=context, backlog=BACKLOG
    )
    tune_gc()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    orphaned = asyncio.create_task(_until_orphaned(parent, stop)) if parent is not None else None
    try:
        await stop.wait()
    finally:
        if orphaned is not None:
            orphaned.cancel()
        await drain(listener, runner, registry, settings.server.shutdown_timeout, settle)


async def _until_orphaned(parent: int, stop: asyncio.Event) -> None:
    while True:  # no event tells a process that its parent died; a getppid() a second costs nothing
        await asyncio.sleep(1.0)
        if os.getppid() != parent:
            break
    log.warning("the supervisor (pid %d) is gone: draining", parent)
    stop.set()


async def drain(
    listener: asyncio.Server, runner: web.AppRunner, registry: Registry, budget: float, settle: float
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(budget - CANCEL_GRACE, 0.0)
    listener.close()  # new connections now go to the next instance
    log.info("draining: no longer accepting; %d connections open, at most %gs", len(registry.connections), budget)
    # Until every listener of this instance is closed, a connection told to close could reconnect to one of them
    # and be reset when it closes; with one process there is nothing to wait for.
    await asyncio.sleep(min(settle, max(deadline - loop.time(), 0.0)))
    registry.draining = True
    await websocket_proxy.close_all(runner.app)  # WebSockets never end by themselves: 1001, and they reconnect
    while registry.connections and loop.time() < deadline:
        registry.close_idle(DRAIN_IDLE_GRACE, loop.time())
        await asyncio.sleep(0.05)
    left = len(registry.connections)
    await runner.cleanup()  # closes what is left, cancelling requests still running after CANCEL_GRACE
    log.info("drained%s", f" ({left} connections were still busy at the deadline)" if left else "")
