"""Several gateways behind a round-robin balancer, with a Redis server of their own: the way teams scale out.

``RedisServer`` runs Debian's ``redis-server`` on a free loopback port. ``RoundRobin`` is a small TCP balancer
that sends each new connection to the next gateway; clients that close their connection after every request
(``force_close``) are spread over every replica.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import shutil
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest

from .stack import HTML, SESSION_SECRET, directory_for, fill_form, start_gateway, start_upstream
from .support import CapturedProcess, DevIdpProcess, free_port, new_browser, start_dev_idp, write_json

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def require_redis() -> None:
    if not Path(REDIS_SERVER).exists():
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true and no redis-server: .ci/run must `apt-get install redis-server`")
        pytest.skip("no redis-server on this machine (apt-get install redis-server): Redis tests not run")


class RedisServer:
    def __init__(self) -> None:
        require_redis()
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while (
            subprocess.run(
                ["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True, check=False
            ).stdout.strip()
            != "PONG"
        ):
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def cli(self, *args: str) -> str:
        return subprocess.run(
            ["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True, check=True
        ).stdout.strip()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


class RoundRobin:
    def __init__(self, ports: list[int]) -> None:
        self._ports = itertools.cycle(ports)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> RoundRobin:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", next(self._ports))
        except OSError:
            writer.close()
            return

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while chunk := await source.read(65536):
                    sink.write(chunk)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


@dataclasses.dataclass
class Cluster:
    idp: DevIdpProcess
    upstream: CapturedProcess
    gateways: list[CapturedProcess]
    ports: list[int]
    public_url: str
    balancer_port: int
    env: dict[str, str]

    @classmethod
    def start(
        cls,
        tmp: Path,
        *,
        replicas: int,
        token_ttl: int = 6,
        extra_env: dict[str, str] | None = None,
        extra_users: list[dict] | None = None,
    ) -> Cluster:
        balancer_port = free_port()
        public_url = f"http://127.0.0.1:{balancer_port}"
        users = write_json(tmp / "users.json", directory_for(public_url, extra_users=extra_users))
        idp = start_dev_idp("--users", str(users), "--token-ttl", str(token_ttl))
        upstream, upstream_url = start_upstream()
        env = {
            **idp.env,
            "GATEWAY_UPSTREAM": upstream_url,
            "GATEWAY_PUBLIC_URL": public_url,
            "GATEWAY_SESSION_SECRET": SESSION_SECRET,
            "GATEWAY_REFRESH_BEFORE": f"{token_ttl // 2}s",
            **(extra_env or {}),
        }
        ports = [free_port() for _ in range(replicas)]
        gateways = [start_gateway({**env, "GATEWAY_LISTEN": f"127.0.0.1:{port}"}) for port in ports]
        return cls(idp, upstream, gateways, ports, public_url, balancer_port, env)

    async def sign_in(self, user: str = "alice") -> tuple[dict[str, str], float]:
        """Sign in through the first gateway directly; returns its cookies and when the tokens were issued."""
        url = f"http://127.0.0.1:{self.ports[0]}"
        async with new_browser() as browser:
            issued = time.time()
            async with browser.get(f"{url}/", headers=HTML) as page:
                fields = {"username": user, "password": f"{user}-password"}
                back = await fill_form(browser, page, fields, follow=False)
            callback = back.headers["Location"].replace(self.public_url, url)
            async with browser.get(callback, allow_redirects=False) as response:
                assert response.status == 302
            return {c.key: c.value for c in browser.cookie_jar if c.key.startswith("_cognito_gateway")}, issued

    def balancer(self) -> RoundRobin:
        balancer = RoundRobin(self.ports)
        balancer.port, balancer.url = self.balancer_port, self.public_url
        return balancer

    async def token_requests(self) -> dict[str, int]:
        headers = {"Authorization": f"Bearer {self.idp.admin_token}"}
        async with aiohttp.ClientSession() as client, client.get(f"{self.idp.url}/admin/stats", headers=headers) as r:
            return (await r.json())["token_requests"]

    async def set_enabled(self, username: str, enabled: bool) -> None:
        headers = {"Authorization": f"Bearer {self.idp.admin_token}"}
        action = "enable" if enabled else "disable"
        async with aiohttp.ClientSession() as client:
            async with client.post(f"{self.idp.url}/admin/users/{username}/{action}", headers=headers) as r:
                assert r.status == 200

    def stop(self) -> None:
        for process in (*self.gateways, self.upstream, self.idp.process):
            process.stop()


def spread_client(cookies: dict[str, str] | None = None) -> aiohttp.ClientSession:
    """A client that opens a new connection per request, so the balancer spreads its requests over replicas."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(force_close=True, limit=0),
        cookies=cookies,
        cookie_jar=aiohttp.CookieJar(unsafe=True),
    )
