"""Composition root: ``create_app(settings, clock=…)`` builds the whole gateway; nothing is global or built at import.

A request's path through the gateway, in order (``server.serve`` puts its connection guard in front of all this:
head timeout and limits, connection limit, drain; ``observe.middleware`` times and counts what follows):

0. ``observe.middleware`` names (X-Request-Id), times and counts every request once it is answered (``metrics``).
1. ``answers.error_middleware`` turns every outcome and failure into one answer (page for browsers, JSON otherwise).
   ``request_hygiene`` refuses absolute-form targets and bad Host headers before anything else.
2. ``IdentityMiddleware`` decides the path's rule, resolves the identity (Bearer token or session cookie, refreshed
   when due) into ``request[IDENTITY]``, and raises NeedsSignIn / Forbidden / InsufficientScope when the rule says no.
3. The route's handler: a gateway endpoint (``endpoints``, ``health``, the public keys of ``signing_keys``) or
   ``proxy.proxy``, which streams the request upstream with the identity's headers (``headers``; the signed
   ``x-amzn-oidc-data`` of ``signed_identity``).
4. ``on_response_prepare`` → ``SessionManager.write_cookies`` puts a new, refreshed or cleared session into the
   response's headers, streamed responses included.

The services are built here; ``cleanup_ctx`` only opens and closes resources (the two HTTP client sessions, the
session backend, the IdP's discovery) and closes them in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web

from . import endpoints, forward_auth, health, metrics, observe, preserved_post, proxy, tls, websocket_proxy
from .access import Policy
from .answers import error_middleware
from .appkeys import HEADERS, IDENTIFY, LOGINS, OIDC, SESSIONS, SETTINGS, UPSTREAM_CLIENT, UPSTREAM_HTTP
from .bearer import BearerTokens
from .bodies import expect_later
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
from .signed_identity import IdentitySigner
from .signing_keys import KeyEndpoints, SigningKeys, load_private_keys
from .upstream_client import UpstreamClient

log = logging.getLogger("gateway")

SIGNED_IN = Policy("authenticated")
SIGNED_IN_API = Policy("authenticated", redirect=False)  # oauth2-proxy's /oauth2/userinfo: 401 when signed out


def _idp_http() -> aiohttp.ClientSession:
    # SECURITY: DummyCookieJar: cookies a server sets on the gateway's own client must never be replayed on
    # behalf of another user.
    return aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), connector=aiohttp.TCPConnector(limit=50))


def _upstream_http(settings: Settings, context: ssl.SSLContext) -> aiohttp.ClientSession:
    """aiohttp's client, for WebSocket upgrades only (``upstream_client`` carries every plain request)."""
    upstream = settings.upstream
    return aiohttp.ClientSession(
        # SECURITY: the upstream's Set-Cookie goes to the browser that caused it, never into a shared jar.
        cookie_jar=aiohttp.DummyCookieJar(),
        connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30, ssl=context),
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


# A worker keeps trying the IdP this long before it listens without it. Workers share the port and start at
# once, so one that listened first and loaded its IdP a second later would answer a 503 to the first users
# of a replica that another worker had already reported ready (readyz), as an IdP started next to the gateway
# (docker compose) makes likely.
STARTUP_GRACE = 3.0
STARTUP_RETRY = 0.2


async def _load_at_startup(oidc: OidcClient) -> IdpUnavailable | None:
    """Discovery and keys within STARTUP_GRACE; the last failure when the IdP is still not there."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STARTUP_GRACE
    first = True
    while True:
        try:
            await oidc.load()
            return None
        except IdpUnavailable as exc:
            if loop.time() + STARTUP_RETRY >= deadline:
                return exc
            if first:
                log.info(
                    "identity provider not there yet (%s); trying for %ss before listening", exc.message, STARTUP_GRACE
                )
                first = False
            await asyncio.sleep(STARTUP_RETRY)


async def _idp_connection(app: web.Application) -> AsyncIterator[None]:
    """Open the IdP client and load discovery and JWKS before listening; when the IdP is down, keep trying in the
    background (the gateway listens and answers 503 meanwhile)."""
    http = _idp_http()
    oidc = app[OIDC]
    oidc.attach(http)
    loader = None
    failure = await _load_at_startup(oidc)
    if failure is None:
        log.info("identity provider ready: %s", app[SETTINGS].provider.issuer)
    else:
        oidc.last_error = failure.message
        log.warning("identity provider not ready at startup (%s); retrying in the background", failure.message)
        loader = asyncio.create_task(oidc.keep_loading())
    yield
    if loader is not None:
        loader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loader
    await http.close()


async def _upstream_connection(app: web.Application) -> AsyncIterator[None]:
    """The lean pooled client for plain requests; aiohttp's session for WebSocket upgrades."""
    settings = app[SETTINGS]
    # SECURITY: an https upstream is always verified, against GATEWAY_UPSTREAM_CA_FILE or the system CAs.
    context = tls.upstream_context(settings.tls.upstream_ca_file)
    app[UPSTREAM_HTTP] = _upstream_http(settings, context)
    app[UPSTREAM_CLIENT] = UpstreamClient(ssl_context=context, connect_timeout=settings.upstream.connect_timeout)
    yield
    await app[UPSTREAM_CLIENT].close()
    await app[UPSTREAM_HTTP].close()


async def _session_backend(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[SESSIONS].backend.close()


def _signer(settings: Settings) -> IdentitySigner:
    """x-amzn-oidc-data's signer: keys from GATEWAY_SIGNING_KEY, else derived from every session secret."""
    configured = settings.identity_headers.signing_key
    if configured is not None:
        keys = SigningKeys(load_private_keys(configured.reveal()))
    else:
        keys = SigningKeys.from_secrets(settings.session.keys)
    return IdentitySigner(
        keys,
        signer_arn=settings.identity_headers.signer_arn,
        issuer=settings.provider.issuer,
        client_id=settings.provider.client_id,
        groups_claim=settings.provider.claims.groups,
    )


# Each gateway endpoint's policy, by route name (see _routes); None: it needs no identity at all.
ROUTE_POLICIES: dict[str, Policy | None] = {
    "callback": None,
    "sign_in": None,
    "start": None,
    "sign_out": None,
    "userinfo": SIGNED_IN_API,
    "who_am_i": SIGNED_IN,
    "post_restore": SIGNED_IN,
    "auth": None,  # forward-auth decides on the original request itself
    "healthz": None,
    "readyz": None,
    "signing_key": None,
    "jwks": None,
    "reserved_callback": None,  # only ever a 405
    "reserved": None,
}


def _sessions(settings: Settings, oidc: OidcClient, clock: Callable[[], float]) -> SessionManager:
    return SessionManager(
        _backend(settings, clock),
        settings.session,
        oidc=oidc,
        audience=settings.provider.audience,
        clock=clock,
        keep_access_token=settings.identity_headers.pass_access_token,
    )


def _header_policy(settings: Settings, signer: IdentitySigner, clock: Callable[[], float]) -> HeaderPolicy:
    identity_headers = settings.identity_headers
    return HeaderPolicy(
        cookie_names=settings.session.cookie_names,
        pass_host_header=settings.upstream.pass_host_header,
        pass_authorization=settings.upstream.pass_authorization,
        strip=settings.upstream.strip_headers,
        families=identity_headers.families,
        signer=signer if identity_headers.signed else None,
        pass_access_token=identity_headers.pass_access_token,
        clock=clock,
    )


def create_app(settings: Settings, *, clock: Callable[[], float] = time.time) -> web.Application:
    oidc = OidcClient(settings.provider, clock=clock)
    sessions, signer, access = _sessions(settings, oidc, clock), _signer(settings), settings.access
    identify = IdentityMiddleware(
        rules=access.rules,
        sessions=sessions,
        bearer=BearerTokens(oidc, access.api_client_ids) if access.api_client_ids else None,
        route_policies=ROUTE_POLICIES,
        skip_auth_preflight=access.skip_auth_preflight,
    )
    # The request's path, outer to inner (see the module docstring).
    middlewares = [observe.middleware(settings), error_middleware, request_hygiene, identify]
    app = web.Application(middlewares=middlewares, client_max_size=1024**2)
    app[SETTINGS], app[OIDC], app[SESSIONS], app[IDENTIFY] = settings, oidc, sessions, identify
    app[LOGINS] = LoginStates(settings.session, clock)
    app[HEADERS] = _header_policy(settings, signer, clock)
    app.on_response_prepare.extend([sessions.write_cookies, observe.stamp])
    websocket_proxy.install(app)
    app.cleanup_ctx.extend(
        [_session_backend, _upstream_connection, _idp_connection, *metrics.contexts(settings, sessions.backend)]
    )
    _routes(app.router, settings, KeyEndpoints(signer.keys))
    return app


# The paths under /oauth2/ that _routes gives the gateway's endpoints, as one aiohttp pattern.
_OWN_PATHS = (
    r"/oauth2/{endpoint:(?:|sign_in|start|sign_out|userinfo|post_restore|auth|healthz|readyz|jwks\.json|keys/[^/]+)}"
)


def _routes(router: web.UrlDispatcher, settings: Settings, keys: KeyEndpoints) -> None:
    # SECURITY: no route answers "Expect" from aiohttp's router, before the identity middleware ran: its default
    # handler sends "100 Continue" (inviting the body of a request about to be refused) and, for any other value,
    # builds a 417 outside the error middleware (a non-ASCII value was a 500 with a traceback). The proxy sends the
    # 100 once the request is let through (bodies.request_body), as post_restore does (bodies.invite_body).
    later = {"expect_handler": expect_later}
    router.add_get(settings.callback_path, endpoints.callback, name="callback", **later)
    router.add_get("/oauth2/sign_in", endpoints.sign_in, name="sign_in", **later)
    router.add_get("/oauth2/start", endpoints.sign_in, name="start", **later)  # oauth2-proxy's name for it
    router.add_get("/oauth2/sign_out", endpoints.sign_out, name="sign_out", allow_head=False, **later)
    router.add_post("/oauth2/sign_out", endpoints.sign_out, name="sign_out", **later)
    router.add_get("/oauth2/userinfo", endpoints.userinfo, name="userinfo", **later)
    router.add_get("/oauth2/", endpoints.who_am_i, name="who_am_i", **later)
    router.add_post("/oauth2/post_restore", preserved_post.restore, name="post_restore", **later)
    # Any method, as oauth2-proxy's: Traefik can pass the original request's (preserveRequestMethod).
    router.add_route("*", "/oauth2/auth", forward_auth.auth, name="auth", **later)
    router.add_get("/oauth2/healthz", health.healthz, name="healthz", **later)
    router.add_get("/oauth2/readyz", health.readyz, name="readyz", **later)
    router.add_get("/oauth2/keys/{kid}", keys.pem, name="signing_key", **later)
    router.add_get("/oauth2/jwks.json", keys.jwks, name="jwks", **later)
    # Another method on one of the paths above is the gateway's 405, never a request to the upstream; any other
    # path under /oauth2/ is proxied under the rules, as oauth2-proxy does (apps such as Spring's own some).
    router.add_route("*", settings.callback_path, endpoints.reserved, name="reserved_callback", **later)
    router.add_route("*", _OWN_PATHS, endpoints.reserved, name="reserved", **later)
    router.add_route("*", "/{tail:.*}", proxy.proxy, name="proxy", **later)
