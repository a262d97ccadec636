"""The gateway end to end in this process: dev_idp, a small upstream and ``gateway.app.create_app``, each on its own
loopback socket, with one FakeClock for the IdP that mints tokens and the gateway that checks and refreshes them.

For the end-to-end tests that need time to pass (refresh, expiry, grace): ``gateway.clock.advance(3300)`` puts a
session in its refresh window at once, where real processes would make the test sleep. What needs real processes
(several replicas behind a balancer, ``python -m gateway`` itself) stays in ``stack`` and ``cluster``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from dev_idp.keys import PoolKeys
from gateway.app import create_app
from gateway.config import Settings

from .conftest import InProcessIdp, start_in_process_idp
from .stack import SESSION_SECRET
from .support import FakeClock

_CHUNK = 64 * 1024


def _bound() -> tuple[socket.socket, str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock, f"http://127.0.0.1:{sock.getsockname()[1]}"


@dataclasses.dataclass
class Upstream:
    """A small upstream: ``/api/whoami`` echoes the headers, ``/api/download?size=N`` streams N bytes with a
    Content-Length; ``seen`` lists the path of every request it served."""

    url: str
    seen: list[str] = dataclasses.field(default_factory=list)

    def app(self) -> web.Application:
        async def whoami(request: web.Request) -> web.Response:
            self.seen.append(request.path)
            return web.json_response({"headers": [[k, v] for k, v in request.headers.items()]})

        async def download(request: web.Request) -> web.StreamResponse:
            self.seen.append(request.path)
            size = int(request.query["size"])
            response = web.StreamResponse()
            response.content_length = size
            await response.prepare(request)
            for start in range(0, size, _CHUNK):
                await response.write(b"x" * min(_CHUNK, size - start))
            await response.write_eof()
            return response

        async def home(request: web.Request) -> web.Response:
            self.seen.append(request.path)
            return web.Response(text=f"hello {request.headers.get('X-Forwarded-User')}")

        app = web.Application()
        app.router.add_get("/api/whoami", whoami)
        app.router.add_get("/api/download", download)
        app.router.add_get("/", home)
        return app


@dataclasses.dataclass
class InProcessGateway:
    url: str
    settings: Settings
    idp: InProcessIdp
    upstream: Upstream
    _idp_runner: web.AppRunner
    idp_running: bool = True

    @property
    def clock(self) -> FakeClock:
        """The one clock of the IdP and the gateway."""
        return self.idp.clock

    def token_requests(self, grant_type: str = "refresh_token") -> int:
        """Successful token requests of ``grant_type`` that dev_idp has answered so far."""
        return self.idp.pool.grants.token_requests.get(grant_type, 0)

    async def set_enabled(self, username: str, enabled: bool) -> None:
        """dev_idp's AdminDisableUser / AdminEnableUser, over HTTP as an administrator calls it."""
        action = "enable" if enabled else "disable"
        headers = {"Authorization": f"Bearer {self.idp.pool.admin_token}"}
        async with aiohttp.ClientSession() as client:
            async with client.post(f"{self.idp.url}/admin/users/{username}/{action}", headers=headers) as response:
                assert response.status == 200

    async def stop_idp(self) -> None:
        """The IdP goes away (an outage): its port refuses connections from now on."""
        self.idp_running = False
        await self._idp_runner.cleanup()


@contextlib.asynccontextmanager
async def in_process_gateway(pool_keys: PoolKeys, **env: str) -> AsyncIterator[InProcessGateway]:
    """dev_idp, the upstream and the gateway (configured as ``python -m gateway`` would be, plus ``env``)."""
    gateway_sock, url = _bound()
    upstream_sock, upstream_url = _bound()
    idp, idp_runner = await start_in_process_idp(
        pool_keys, callback_urls=(f"{url}/cognito_redirect",), logout_urls=(f"{url}/",)
    )
    upstream = Upstream(upstream_url)
    runners: list[web.AppRunner] = []
    gateway = None
    try:
        runners.append(web.AppRunner(upstream.app(), access_log=None))
        await runners[-1].setup()
        await web.SockSite(runners[-1], upstream_sock).start()
        settings = Settings.from_env(
            {
                **idp.pool.gateway_environment(idp.pool.directory.clients["gateway"]),
                "GATEWAY_UPSTREAM": upstream_url,
                "GATEWAY_PUBLIC_URL": url,
                "GATEWAY_SESSION_SECRET": SESSION_SECRET,
                **env,
            }
        )
        runners.append(web.AppRunner(create_app(settings, clock=idp.clock), access_log=None))
        await runners[-1].setup()
        await web.SockSite(runners[-1], gateway_sock).start()
        gateway = InProcessGateway(url, settings, idp, upstream, idp_runner)
        yield gateway
    finally:
        for runner in reversed(runners):
            await runner.cleanup()
        if gateway is None or gateway.idp_running:
            await idp_runner.cleanup()
