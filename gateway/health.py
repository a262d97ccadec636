"""``/oauth2/healthz`` (the process is up) and ``/oauth2/readyz`` (it can sign people in and reach the upstream)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from .appkeys import OIDC, SESSIONS, SETTINGS

_UPSTREAM_CHECK_TIMEOUT = 2.0


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"}, headers={"Cache-Control": "no-store"})


async def readyz(request: web.Request) -> web.Response:
    provider = request.app[OIDC]
    upstreams = request.app[SETTINGS].upstream.all_urls
    reachable = await asyncio.gather(*(_reachable(url.host or "", url.port or 80) for url in upstreams))
    failing = [
        f"{url.host}:{url.port}: {state}" for url, state in zip(upstreams, reachable, strict=True) if state != "ok"
    ]
    checks = {
        "identity_provider": "ok" if provider.ready else f"not ready: {provider.last_error}",
        "upstream": "; ".join(failing) or "ok",
        "session_store": await request.app[SESSIONS].backend.readiness(),
    }
    ready = all(value == "ok" for value in checks.values())
    return web.json_response(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status=200 if ready else 503,
        headers={"Cache-Control": "no-store"},
    )


async def _reachable(host: str, port: int) -> str:
    """A TCP connect: proves the upstream listens without sending it a request of ours."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), _UPSTREAM_CHECK_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        return f"unreachable: {exc.__class__.__name__}"
    writer.close()
    await writer.wait_closed()
    return "ok"
