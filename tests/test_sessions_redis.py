"""The Redis session store against a real redis-server: opaque cookies, encryption, sign-out and revocation that
take effect at once, the admin command, and an outage that gives 503s (never a pass) and heals by itself."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from .cluster import Cluster, RedisServer
from .stack import HTML
from .support import ROOT


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture
def cluster(tmp_path: Path, redis_server: RedisServer) -> Iterator[Cluster]:
    running = Cluster.start(
        tmp_path,
        replicas=1,
        token_ttl=60,
        extra_env={"GATEWAY_SESSION_STORE": "redis", "GATEWAY_REDIS_URL": redis_server.url},
    )
    yield running
    running.stop()


async def sign_in(cluster: Cluster, user: str = "alice") -> dict[str, str]:
    return (await cluster.sign_in(user))[0]


async def whoami(cluster: Cluster, cookies: dict[str, str]) -> int:
    async with aiohttp.ClientSession(cookies=cookies) as client:
        async with client.get(f"http://127.0.0.1:{cluster.ports[0]}/api/whoami", allow_redirects=False) as response:
            return response.status


def sessions_command(cluster: Cluster, *args: str, **env_changes: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **cluster.env, **env_changes}
    return subprocess.run(
        [sys.executable, "-m", "gateway", "sessions", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


async def test_the_cookie_holds_only_an_opaque_id_and_redis_an_encrypted_session(
    cluster: Cluster, redis_server: RedisServer
) -> None:
    cookies = await sign_in(cluster)
    assert list(cookies) == ["_cognito_gateway"] and len(cookies["_cognito_gateway"]) == 43  # 256 random bits
    keys = redis_server.cli("--scan", "--pattern", "cognito-gateway:*:session:*").split()
    assert len(keys) == 1 and cookies["_cognito_gateway"] not in keys[0], "Redis keys are hashes of the ids"
    value = redis_server.cli("get", keys[0])
    assert "alice" not in value and value.startswith("Ag"), "the session is sealed (version byte 0x02)"
    ttl = int(redis_server.cli("ttl", keys[0]))
    assert 0 < ttl <= 2 * 3600, "TTL: the remaining life (idle timeout 2h)"
    assert await whoami(cluster, cookies) == 200


async def test_sign_out_ends_the_session_on_the_server_at_once(cluster: Cluster) -> None:
    cookies = await sign_in(cluster)
    async with aiohttp.ClientSession(cookies=cookies) as client:
        url = f"http://127.0.0.1:{cluster.ports[0]}/oauth2/sign_out"
        async with client.get(url, allow_redirects=False) as response:
            assert response.status == 302
    assert await whoami(cluster, cookies) == 401, "a copy of the signed-out cookie is useless"


async def test_revoke_every_session_of_one_user(cluster: Cluster) -> None:
    laptop, phone, bob = await sign_in(cluster), await sign_in(cluster), await sign_in(cluster, "bob")
    listed = sessions_command(cluster, "list", "--user", "alice")
    assert listed.returncode == 0 and "2 session(s) for alice" in listed.stdout, listed.stderr
    revoked = sessions_command(cluster, "revoke", "--user", "alice")
    assert revoked.returncode == 0 and "revoked 2 session(s)" in revoked.stdout
    assert await whoami(cluster, laptop) == 401 and await whoami(cluster, phone) == 401
    assert await whoami(cluster, bob) == 200, "other users keep their sessions"
    assert "0 session(s) for alice" in sessions_command(cluster, "list", "--user", "alice").stdout


def test_sessions_command_needs_the_redis_store(cluster: Cluster) -> None:
    result = sessions_command(cluster, "list", "--user", "alice", GATEWAY_SESSION_STORE="cookie")
    assert result.returncode == 2 and "GATEWAY_SESSION_STORE=redis" in result.stderr


async def test_redis_down_gives_503_never_a_pass_and_recovers(cluster: Cluster, redis_server: RedisServer) -> None:
    cookies = await sign_in(cluster)
    base = f"http://127.0.0.1:{cluster.ports[0]}"
    redis_server.process.send_signal(signal.SIGSTOP)  # hangs like a partitioned Redis
    try:
        async with aiohttp.ClientSession(cookies=cookies) as client:
            async with client.get(f"{base}/api/whoami", headers=HTML) as response:
                assert response.status == 503
                assert "session store cannot be reached" in await response.text()
            async with client.get(f"{base}/oauth2/readyz") as response:
                body = await response.json()
                assert response.status == 503 and body["checks"]["session_store"].startswith("unreachable")
    finally:
        redis_server.process.send_signal(signal.SIGCONT)
    for _ in range(50):
        if await whoami(cluster, cookies) == 200:
            break
        await asyncio.sleep(0.1)
    assert await whoami(cluster, cookies) == 200, "the gateway recovers by itself when Redis is back"
