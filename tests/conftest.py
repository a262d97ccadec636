"""Shared fixtures. Every server listens on a real loopback socket; nothing is mocked at the HTTP layer."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from aiohttp import web

from dev_idp.app import create_app
from dev_idp.directory import load_directory
from dev_idp.keys import PoolKeys, load_or_create_keys
from dev_idp.pool import Pool

from .stack import Stack
from .support import FakeClock, new_browser

CLIENT_SECRET = "gateway-dev-secret-for-local-use-only"


@pytest.fixture(scope="session")
def pool_keys() -> PoolKeys:
    """RSA key generation is slow; one pair of keys serves every in-process pool of the run."""
    return load_or_create_keys(None)


@dataclasses.dataclass
class InProcessIdp:
    url: str
    pool: Pool
    clock: FakeClock

    @property
    def issuer(self) -> str:
        return self.pool.issuer

    def redirect_uri(self) -> str:
        return self.pool.directory.clients["gateway"].callback_urls[0]


async def start_in_process_idp(
    pool_keys: PoolKeys,
    *,
    callback_urls: tuple[str, ...] | None = None,
    auto_confirm: bool = False,
    logout_urls: tuple[str, ...] | None = None,
) -> tuple[InProcessIdp, web.AppRunner]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    clock = FakeClock()
    directory = load_directory(None)
    client = directory.clients["gateway"]
    changes = {}
    if callback_urls is not None:
        changes["callback_urls"] = callback_urls
    if logout_urls is not None:
        changes["logout_urls"] = logout_urls
    directory.clients["gateway"] = dataclasses.replace(client, **changes)
    pool = Pool(
        directory=directory,
        keys=pool_keys,
        public_url=url,
        auto_confirm=auto_confirm,
        admin_token="admin-token-for-tests",
        clock=clock,
    )
    runner = web.AppRunner(create_app(pool), access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    return InProcessIdp(url, pool, clock), runner


@pytest.fixture
async def idp(pool_keys: PoolKeys) -> AsyncIterator[InProcessIdp]:
    """dev_idp in this process, on a loopback port, with a clock the test controls."""
    server, runner = await start_in_process_idp(pool_keys)
    yield server
    await runner.cleanup()


@pytest.fixture
async def browser() -> AsyncIterator[aiohttp.ClientSession]:
    async with new_browser() as session:
        yield session


# A user with ten Cognito groups of realistic length: with Cognito-sized tokens this is what overflows one cookie.
MANY_GROUPS = [
    f"team-{name}-engineering"
    for name in ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet")
]
CAROL = {
    "username": "carol",
    "password": "carol-password",
    "email": "carol@example.com",
    "groups": MANY_GROUPS,
    "attributes": {"name": "Carol Danvers", "preferred_username": "carol.d"},
}


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """dev_idp + upstream_demo + gateway as real processes, shared by the tests that do not change their state."""
    running = Stack.start(tmp_path_factory.mktemp("stack"), extra_users=[CAROL])
    yield running
    running.stop()
