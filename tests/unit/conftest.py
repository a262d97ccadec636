"""Fixtures of the unit layer: a fake clock, and a real redis-server for the Redis backend's contract tests.

Unit tests build each gateway module directly (no app, no sockets except Redis's), feed it requests made with
aiohttp's ``make_mocked_request``, and move time only with ``FakeClock.advance``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from ..cluster import RedisServer
from ..support import FakeClock
from .pipeline import Pipeline, build_app


@pytest.fixture
def clock() -> FakeClock:
    """The time every module under test reads: the wall clock's now, to the whole second, then only as told."""
    return FakeClock(start=float(int(time.time())))


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """Debian's redis-server on a free loopback port, once per test module (skipped where it is not installed)."""
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture
def pipeline(aiohttp_client: Any, clock: FakeClock) -> Callable[..., Awaitable[Pipeline]]:
    """``await pipeline(rules=..., public=...)``: the gateway's middlewares in front of an echo handler, served."""

    async def start(**options: Any) -> Pipeline:
        app, sessions = build_app(clock, **options)
        return Pipeline(await aiohttp_client(app), sessions, clock)

    return start
