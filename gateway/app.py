"""Composition root: ``create_app(settings, clock=…)`` builds the whole gateway; nothing is global or built at import.

A request's path through the gateway, in order:

1. ``answers.error_middleware`` turns every outcome and failure into one answer (page for browsers, JSON otherwise).
   ``request_hygiene`` refuses absolute-form targets and bad Host headers before anything else.
2. ``IdentityMiddleware`` decides the path's rule, resolves the identity (Bearer token or session cookie, refreshed
   when due) into ``request[IDENTITY]``, and raises NeedsSignIn / Forbidden / InsufficientScope when the rule says no.
3. The route's handler: a gateway endpoint (``endpoints``, ``health``) or ``proxy.proxy``, which streams the request
   upstream with the identity's headers.
4. ``on_response_prepare`` → ``SessionManager.write_cookies`` puts a new, refreshed or cleared session into the
   response's headers, streamed responses included.

The services are built here; ``cleanup_ctx`` only opens and closes resources (the two HTTP client sessions, the
session backend, the IdP's discovery) and closes them in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web

from . import endpoints, health, proxy, tls, websocket_proxy
from .access import Policy
from .answers import error_middleware
from .appkeys import HEADERS, LOGINS, OIDC, SESSIONS, SETTINGS, UPSTREAM_HTTP
from .bearer import BearerTokens
from .config import Settings
from .errors import IdpUnavailable
from .headers import HeaderPolicy
from .identity_middleware import IdentityMiddleware
from .login_state import LoginStates
from .oidc import OidcClient
from .request_hygiene import request_hygiene
from .session_backends import CookieBackend, SessionBackend
from .session_manager import SessionManager
from .session_redis import RedisBackend

log = logging.getLogger("gateway")

SIGNED_IN = Policy("authenticated")


def _idp_http() -> aiohttp.ClientSession:
    # SECURITY: DummyCookieJar: cookies a server sets on the gateway's own client must never be replayed on
    # behalf of another user.
    return aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), connector=aiohttp.TCPConnector(limit=50))


def _upstream_http(settings: Settings) -> aiohttp.ClientSession:
    upstream = settings.upstream
    return aiohttp.ClientSession(
        # SECURITY: the upstream's Set-Cookie goes to the browser that caused it, never into a shared jar.
        cookie_jar=aiohttp.DummyCookieJar(),
        # SECURITY: an https upstream is always verified, against GATEWAY_UPSTREAM_CA_FILE or the system CAs.
        connector=aiohttp.TCPConnector(
            limit=0, keepalive_timeout=30, ssl=tls.upstream_context(settings.tls.upstream_ca_file)
        ),
        timeout=aiohttp.ClientTimeout(
            total=None, sock_connect=upstream.connect_timeout, sock_read=upstream.read_timeout
        ),
        auto_decompress=False,
        # Send only the headers the client sent: no User-Agent, Accept-Encoding or Content-Type of aiohttp's own.
        skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
    )


def _backend(settings: Settings, clock: Callable[[], float]) -> SessionBackend:
    if settings.session.store == "redis":
        return RedisBackend(settings.session, clock)
    return CookieBackend(settings.session)


async def _idp_connection(app: web.Application) -> AsyncIterator[None]:
    """Open the IdP client and load discovery and JWKS; when the IdP is down, keep trying in the background."""
    http = _idp_http()
    oidc = app[OIDC]
    oidc.attach(http)
    loader = None
    try:
        await oidc.load()
        log.info("identity provider ready: %s", app[SETTINGS].provider.issuer)
    except IdpUnavailable as exc:
        oidc.last_error = exc.message
        log.warning("identity provider not ready at startup (%s); retrying in the background", exc.message)
        loader = asyncio.create_task(oidc.keep_loading())
    yield
    if loader is not None:
        loader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loader
    await http.close()


async def _upstream_connection(app: web.Application) -> AsyncIterator[None]:
    app[UPSTREAM_HTTP] = _upstream_http(app[SETTINGS])
    yield
    await app[UPSTREAM_HTTP].close()


async def _session_backend(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[SESSIONS].backend.close()


def create_app(settings: Settings, *, clock: Callable[[], float] = time.time) -> web.Application:
    oidc = OidcClient(settings.provider, clock=clock)
    sessions = SessionManager(
        _backend(settings, clock), settings.session, oidc=oidc, audience=settings.provider.audience, clock=clock
    )
    access = settings.access
    bearer = BearerTokens(oidc, access.api_client_ids) if access.api_client_ids else None
    # Each gateway endpoint's policy, by route name; None: it needs no identity at all.
    route_policies: dict[str, Policy | None] = {
        "callback": None,
        "sign_in": None,
        "sign_out": None,
        "userinfo": SIGNED_IN,
        "healthz": None,
        "readyz": None,
    }
    app = web.Application(
        middlewares=[
            error_middleware,
            request_hygiene,
            IdentityMiddleware(
                rules=access.rules,
                sessions=sessions,
                bearer=bearer,
                route_policies=route_policies,
                skip_auth_preflight=access.skip_auth_preflight,
            ),
        ],
        client_max_size=1024**2,
    )
    app[SETTINGS], app[OIDC], app[SESSIONS] = settings, oidc, sessions
    app[LOGINS] = LoginStates(settings.session, clock)
    app[HEADERS] = HeaderPolicy(
        cookie_names=settings.session.cookie_names,
        pass_host_header=settings.upstream.pass_host_header,
        pass_authorization=settings.upstream.pass_authorization,
        strip=settings.upstream.strip_headers,
    )
    app.on_response_prepare.append(sessions.write_cookies)
    websocket_proxy.install(app)
    app.cleanup_ctx.extend([_session_backend, _upstream_connection, _idp_connection])
    _routes(app.router, settings)
    return app


def _routes(router: web.UrlDispatcher, settings: Settings) -> None:
    router.add_get(settings.callback_path, endpoints.callback, name="callback")
    router.add_get("/oauth2/sign_in", endpoints.sign_in, name="sign_in")
    router.add_route("*", "/oauth2/sign_out", endpoints.sign_out, name="sign_out")
    router.add_get("/oauth2/userinfo", endpoints.userinfo, name="userinfo")
    router.add_get("/oauth2/healthz", health.healthz, name="healthz")
    router.add_get("/oauth2/readyz", health.readyz, name="readyz")
    router.add_route("*", "/{tail:.*}", proxy.proxy, name="proxy")
