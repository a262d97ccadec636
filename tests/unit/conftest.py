"""Fixtures of the unit layer: a fake clock, and a real redis-server for the Redis backend's contract tests.

Unit tests build each gateway module directly (no app, no sockets except Redis's), feed it requests made with
aiohttp's ``make_mocked_request``, and move time only with ``FakeClock.advance``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..cluster import RedisServer
from ..support import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    """The time every module under test reads; starts at the wall clock's now and moves only when told."""
    return FakeClock()


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """Debian's redis-server on a free loopback port, once per test module (skipped where it is not installed)."""
    server = RedisServer()
    yield server
    server.stop()
