"""Composition root: ``create_app(settings)`` builds the whole gateway; nothing is global or built at import time.

Middlewares, outer to inner: ``error_middleware`` (every failure becomes one clear answer). Routes: the callback,
the ``/oauth2/`` endpoints, and a catch-all that proxies. Long-lived resources (two HTTP client sessions, the
provider's background loader) belong to ``cleanup_ctx``, which closes them in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from . import auth, health, proxy, tls
from .appkeys import IDP, LOGINS, PROVIDER, SESSIONS, SETTINGS, UPSTREAM_HTTP, VERIFIER
from .config import Settings
from .cookie_store import CookieSessionStore
from .errors import IdpUnavailable
from .idp_client import IdpClient
from .login import LoginStates
from .middleware import error_middleware
from .provider import Provider
from .redis_store import RedisSessionStore
from .session import SessionStore
from .sessions import SessionManager
from .tokens import TokenVerifier

log = logging.getLogger("gateway")


def _session_store(settings: Settings) -> SessionStore:
    if settings.session.store == "redis":
        return RedisSessionStore(settings.session)
    return CookieSessionStore(settings.session)


async def _identity_provider(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    # SECURITY: DummyCookieJar: cookies a server sets on the gateway's own client must never be replayed on
    # behalf of another user.
    http = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), connector=aiohttp.TCPConnector(limit=50))
    provider = Provider(http, settings.cognito)
    app[PROVIDER] = provider
    app[IDP] = IdpClient(http, settings.cognito)
    store = _session_store(settings)
    sessions = SessionManager(store, settings.session, provider=provider, idp=app[IDP], verifier=app[VERIFIER])
    app[SESSIONS] = sessions
    try:
        await provider.load()
        log.info("identity provider ready: %s", settings.cognito.issuer)
        loader = None
    except IdpUnavailable as exc:
        provider.last_error = exc.message
        log.warning("identity provider not ready at startup (%s); retrying in the background", exc.message)
        loader = asyncio.create_task(provider.keep_loading())
    yield
    if loader is not None:
        loader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loader
    await store.close()
    await http.close()


async def _upstream_client(app: web.Application) -> AsyncIterator[None]:
    upstream = app[SETTINGS].upstream
    http = aiohttp.ClientSession(
        # SECURITY: the upstream's Set-Cookie goes to the browser that caused it, never into a shared jar.
        cookie_jar=aiohttp.DummyCookieJar(),
        # SECURITY: an https upstream is always verified, against GATEWAY_UPSTREAM_CA_FILE or the system CAs.
        connector=aiohttp.TCPConnector(
            limit=0, keepalive_timeout=30, ssl=tls.upstream_context(app[SETTINGS].tls.upstream_ca_file)
        ),
        timeout=aiohttp.ClientTimeout(
            total=None, sock_connect=upstream.connect_timeout, sock_read=upstream.read_timeout
        ),
        auto_decompress=False,
        # Send only the headers the client sent: no User-Agent, Accept-Encoding or Content-Type of aiohttp's own.
        skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
    )
    app[UPSTREAM_HTTP] = http
    yield
    await http.close()


async def _write_session_cookies(request: web.Request, response: web.StreamResponse) -> None:
    """Session changes reach the browser on every response, streamed ones included (see sessions.py)."""
    await request.app[SESSIONS].on_response_prepare(request, response)


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[error_middleware], client_max_size=1024**2)
    app[SETTINGS] = settings
    app[LOGINS] = LoginStates(settings)
    app[VERIFIER] = TokenVerifier(settings.cognito)
    app.on_response_prepare.append(_write_session_cookies)
    app.cleanup_ctx.append(_identity_provider)
    app.cleanup_ctx.append(_upstream_client)

    app.router.add_get(settings.callback_path, auth.callback)
    app.router.add_get("/oauth2/sign_in", auth.sign_in)
    app.router.add_route("GET", "/oauth2/sign_out", auth.sign_out)
    app.router.add_route("POST", "/oauth2/sign_out", auth.sign_out)
    app.router.add_get("/oauth2/userinfo", auth.userinfo)
    app.router.add_get("/oauth2/healthz", health.healthz)
    app.router.add_get("/oauth2/readyz", health.readyz)
    app.router.add_route("*", "/{tail:.*}", proxy.proxy)
    return app
