"""Prometheus metrics: what the gateway counts, and the private listener (GATEWAY_METRICS_LISTEN) that serves them.

Recording. Call sites record through the small functions below, one line each (``metrics.session_refreshed
("ended")``), so no other module knows prometheus_client. A process has exactly one set of instruments, made at
first use: in multiprocess mode each value is a slot in this process's file, and two instruments of one name in
one process would overwrite each other's slots.

Several processes. prometheus_client decides where values live when it is first imported: in memory, or, when
``PROMETHEUS_MULTIPROC_DIR`` is set, in per-process files in that directory, which a scrape sums up (counters and
histograms over every process that ever ran, gauges over the live ones). So this module imports it only when the
first instrument is made, and ``prepare()`` (the main process, before any worker exists) sets that directory up.
Then every worker, and a single process alike, reports the sum of all; without ``prepare()`` a process reports its
own values, which is the same thing when it is the only one.

The listener. ``listener(settings)`` is a cleanup context: each serving process listens on GATEWAY_METRICS_LISTEN
with SO_REUSEPORT, and whichever of them the kernel hands a scrape to answers it with the sum of all processes, so
no process has to be the special one and a restarting worker costs no scrape. It is never the public port (config
refuses that); ``/metrics`` on the public port is proxied and ruled like any other path.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from aiohttp import web

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Gauge

    from .config import Settings
    from .session_backends import SessionBackend

log = logging.getLogger("gateway.metrics")

P = ParamSpec("P")
T = TypeVar("T")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Seconds: from a cached page (1 ms) to the default GATEWAY_UPSTREAM_TIMEOUT (60 s).
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
STORE_PING_INTERVAL = 15.0
_LABEL = re.compile(r"[a-z0-9_]{1,48}")


class MetricsListenError(OSError):
    """GATEWAY_METRICS_LISTEN cannot be bound: the process cannot serve what it was configured to."""


class _Instruments:
    """Every metric of the gateway; one instance per process (``_instruments``)."""

    def __init__(self) -> None:
        # Imported here, not at the top: its storage is chosen at import, after prepare() (module docstring).
        import prometheus_client as prom

        self.multiprocess = MULTIPROC_ENV in os.environ
        self.registry = prom.CollectorRegistry()
        # prometheus_client's labels() takes a lock and builds tuples on every call; a request records five
        # labelled values, so their children are kept here (the label values are bounded, and so is this).
        self.children: dict[tuple[object, ...], Any] = {}
        self._requests(prom)
        self._identity(prom)

    def _requests(self, prom: ModuleType) -> None:
        registry = self.registry
        self.requests = prom.Counter(
            "gateway_requests_total",
            "Requests answered, by route, outcome and status class.",
            ["route", "outcome", "status"],
            registry=registry,
        )
        self.duration = prom.Histogram(
            "gateway_request_duration_seconds",
            "From the request's arrival to the end of its answer.",
            ["route", "outcome"],
            buckets=BUCKETS,
            registry=registry,
        )
        self.upstream = prom.Histogram(
            "gateway_upstream_response_seconds",
            "From sending a request upstream to the upstream's response head.",
            ["upstream"],
            buckets=BUCKETS,
            registry=registry,
        )
        self.in_flight = prom.Gauge(
            "gateway_requests_in_flight", "Requests being handled now.", registry=registry, multiprocess_mode="livesum"
        )
        self.websockets = prom.Gauge(
            "gateway_open_websockets", "Proxied WebSockets open now.", registry=registry, multiprocess_mode="livesum"
        )

    def _identity(self, prom: ModuleType) -> None:
        registry = self.registry
        self.sign_ins = prom.Counter("gateway_sign_ins_total", "Sign-ins that started a session.", registry=registry)
        self.sign_in_failures = prom.Counter(
            "gateway_sign_in_failures_total",
            "Callbacks that started no session, by reason.",
            ["reason"],
            registry=registry,
        )
        self.refreshes = prom.Counter(
            "gateway_session_refreshes_total", "Token refreshes of sessions, by result.", ["result"], registry=registry
        )
        self.jwks_fetches = prom.Counter(
            "gateway_jwks_fetches_total", "Fetches of the IdP's signing keys, by result.", ["result"], registry=registry
        )
        self.store_up = prom.Gauge(
            "gateway_session_store_up",
            "1 when every live process reaches the session store, else 0 (only for a store to reach).",
            ["store"],
            registry=registry,
            multiprocess_mode="livemin",
        )
        for result in ("refreshed", "ended", "transient"):
            self.refreshes.labels(result)  # series at 0 from the start, so rate() works from the first scrape
        for result in ("ok", "failed"):
            self.jwks_fetches.labels(result)

    @functools.cached_property
    def connections(self) -> Gauge:
        """Made when the serving layer first reports: until then no series, rather than a false 0."""
        from prometheus_client import Gauge

        return Gauge(
            "gateway_open_connections",
            "Client connections open now (counted by the serving layer).",
            registry=self.registry,
            multiprocess_mode="livesum",
        )


@functools.cache
def _instruments() -> _Instruments:
    return _Instruments()


def status_class(status: int | None) -> str:
    """``2xx`` … ``5xx``; ``none`` when no answer went out (the client left, the connection broke first)."""
    return f"{status // 100}xx" if status else "none"


def _child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, made once per label set."""
    children = _instruments().children
    key = (id(metric), *labels)
    child = children.get(key)
    if child is None:
        child = children[key] = metric.labels(*labels)
    return child


def _label(value: str) -> str:
    """A label value from a bounded vocabulary; anything else is ``other`` (a label must not grow without bound)."""
    return value if _LABEL.fullmatch(value) else "other"


# Recording ------------------------------------------------------------------------------------------------------
def request_started() -> None:
    _instruments().in_flight.inc()


def request_finished(route: str, outcome: str, status: int | None, seconds: float) -> None:
    instruments = _instruments()
    instruments.in_flight.dec()
    route, outcome = _label(route), _label(outcome)
    _child(instruments.requests, route, outcome, status_class(status)).inc()
    _child(instruments.duration, route, outcome).observe(seconds)


def upstream_answered(upstream: str, seconds: float) -> None:
    """``upstream``: the origin of a configured upstream URL (bounded by the configuration)."""
    _child(_instruments().upstream, upstream).observe(seconds)


def signed_in() -> None:
    _instruments().sign_ins.inc()


def sign_in_failed(reason: str) -> None:
    _instruments().sign_in_failures.labels(_label(reason)).inc()


def session_refreshed(result: str) -> None:
    """``refreshed``, ``ended`` (the IdP refused: the session is over) or ``transient`` (retried later)."""
    _instruments().refreshes.labels(_label(result)).inc()


def counts_jwks_fetches(fetch: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Decorates the JWKS fetch: ``ok`` when it returns, ``failed`` when it raises."""

    @functools.wraps(fetch)
    async def counted(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            result = await fetch(*args, **kwargs)
        except Exception:
            _instruments().jwks_fetches.labels("failed").inc()
            raise
        _instruments().jwks_fetches.labels("ok").inc()
        return result

    return counted


def websocket_opened() -> None:
    _instruments().websockets.inc()


def websocket_closed() -> None:
    _instruments().websockets.dec()


def set_open_connections(count: int) -> None:
    """The serving layer's count of this process's open client connections (aiohttp has no public hook for it)."""
    _instruments().connections.set(count)


def session_store_up(up: bool, store: str = "redis") -> None:
    _instruments().store_up.labels(store).set(1 if up else 0)


# Processes ------------------------------------------------------------------------------------------------------
def prepare(settings: Settings) -> Path | None:
    """The main process, once, before any worker starts and before ``create_app``: set up multiprocess mode.

    With GATEWAY_METRICS_LISTEN set, values go to files in PROMETHEUS_MULTIPROC_DIR: the operator's (emptied now:
    files left by an earlier run would be added to this one's), or a new private directory, removed at exit.
    Returns the directory (None: metrics are off and nothing changes).
    """
    if settings.observability.metrics_listen is None:
        return None
    if "prometheus_client" in sys.modules and MULTIPROC_ENV not in os.environ:
        raise RuntimeError("metrics.prepare() must run before prometheus_client is imported (it picks its storage)")
    configured = os.environ.get(MULTIPROC_ENV)
    if configured:
        directory = Path(configured)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink()
    else:
        directory = Path(tempfile.mkdtemp(prefix="cognito-gateway-metrics-"))
        os.environ[MULTIPROC_ENV] = str(directory)  # inherited by every worker, forked or spawned
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return directory


def process_exited(pid: int) -> None:
    """The supervisor, after reaping a worker: its live gauges (in flight, connections, WebSockets, store) leave
    the sums. Its counters stay: a counter must never go down because a worker was replaced."""
    if MULTIPROC_ENV in os.environ:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


# Serving --------------------------------------------------------------------------------------------------------
def _exposition_registry() -> CollectorRegistry:
    """What a scrape reads: every process's files in multiprocess mode, else this process's instruments."""
    from prometheus_client import CollectorRegistry, multiprocess

    instruments = _instruments()
    if not instruments.multiprocess:
        return instruments.registry
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=os.environ[MULTIPROC_ENV])
    return registry


def exposition_app() -> web.Application:
    """``GET /metrics`` in Prometheus' text format (OpenMetrics when the scraper asks for it)."""
    from prometheus_client.aiohttp import make_aiohttp_handler

    app = web.Application()
    app.router.add_get("/metrics", make_aiohttp_handler(_exposition_registry()))
    return app


def listener(settings: Settings) -> Callable[[web.Application], AsyncIterator[None]] | None:
    """The cleanup context that serves ``/metrics`` on GATEWAY_METRICS_LISTEN; None when it is not set."""
    where = settings.observability.metrics_listen
    if where is None:
        return None
    host, port = where

    async def metrics_listener(_: web.Application) -> AsyncIterator[None]:
        runner = web.AppRunner(exposition_app(), access_log=None)
        await runner.setup()
        # reuse_port: every worker of this instance listens; the kernel gives each scrape to one of them.
        site = web.TCPSite(runner, host, port, reuse_port=True)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise MetricsListenError(f"cannot listen on GATEWAY_METRICS_LISTEN={host}:{port}: {exc.strerror}") from exc
        log.info("metrics on http://%s:%s/metrics", host, port)
        yield
        await runner.cleanup()

    return metrics_listener


def contexts(settings: Settings, backend: SessionBackend) -> list[Callable[[web.Application], AsyncIterator[None]]]:
    """For create_app's cleanup_ctx: the listener, and with the Redis store its watch; nothing when metrics are off."""
    serve = listener(settings)
    if serve is None:
        return []
    return [serve, *([store_watch(backend)] if settings.session.store == "redis" else [])]


def store_watch(backend: SessionBackend) -> Callable[[web.Application], AsyncIterator[None]]:
    """The cleanup context that pings the session store every STORE_PING_INTERVAL for ``gateway_session_store_up``."""

    async def ping_forever() -> None:
        while True:
            session_store_up(await backend.readiness() == "ok")
            await asyncio.sleep(STORE_PING_INTERVAL)

    async def session_store_watch(_: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(ping_forever())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return session_store_watch
