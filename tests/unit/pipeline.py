"""A tiny app with the gateway's two middlewares in front of one echo handler, for the middleware and answer tests.

Like aiohttp's own middleware tests: a small app per test, driven with ``aiohttp_client``. The OIDC client is a
stand-in (Bearer tokens it knows, an authorize URL); sessions are real sealed cookies of a real SessionManager.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

from aiohttp import web
from aiohttp.test_utils import TestClient
from multidict import CIMultiDictProxy
from yarl import URL

from gateway.access import AccessRules, Policy, parse_rules
from gateway.answers import error_middleware
from gateway.appkeys import LOGINS, OIDC, SESSIONS, SETTINGS
from gateway.bearer import BearerTokens
from gateway.config import Settings
from gateway.errors import IdpUnavailable, InvalidToken
from gateway.identity import IDENTITY, Identity
from gateway.identity_middleware import IdentityMiddleware
from gateway.login_state import LoginStates
from gateway.oidc import OidcClient
from gateway.session_backends import CookieBackend, SessionBackend
from gateway.session_manager import SessionManager

from ..support import FakeClock
from .factories import user_session

ENV = {
    "COGNITO_ISSUER": "https://idp.example/pool",
    "COGNITO_CLIENT_ID": "gateway",
    "GATEWAY_UPSTREAM": "http://upstream.internal:5000",
    "GATEWAY_PUBLIC_URL": "http://gateway.test",
    "GATEWAY_SESSION_SECRET": "dnZ/js812RQDSb1Qdi0JioX6KnZx3KBKhqAh67NUdZQ=",
}
BROWSER = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class StandInOidc:
    """The parts of ``OidcClient`` the pipeline uses: Bearer verification and the authorize URL."""

    def __init__(self, tokens: Mapping[str, Identity] | None = None, *, idp_up: bool = True) -> None:
        self.tokens = dict(tokens or {})
        self.idp_up = idp_up

    async def verify_bearer(self, token: str, client_ids: frozenset[str]) -> Identity:
        if token not in self.tokens:
            raise InvalidToken("not one of the stand-in's tokens")
        return self.tokens[token]

    def authorize_url(self, *, state: str, nonce: str, code_challenge: str, redirect_uri: str) -> str:
        if not self.idp_up:
            raise IdpUnavailable()
        return str(URL("https://idp.example/oauth2/authorize").with_query(state=state, redirect_uri=redirect_uri))


async def echo(request: web.Request) -> web.Response:
    """Who the middleware says the request comes from."""
    identity = request[IDENTITY]
    return web.json_response({"user": identity.name if identity else None, "via": identity.via if identity else None})


@dataclasses.dataclass(frozen=True)
class Answer:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


@dataclasses.dataclass
class Pipeline:
    client: TestClient
    sessions: SessionManager
    clock: FakeClock

    def cookie_for(self, **changes: Any) -> dict[str, str]:
        """The Cookie header of a browser signed in as alice (or as ``changes`` say), sealed for real."""
        value = self.sessions.backend.cookie_value(user_session(self.clock(), **changes))
        return {"Cookie": f"{self.sessions.cookies.name}={value}"}

    async def send(self, target: str, *, method: str = "GET", headers: Mapping[str, str] | None = None) -> Answer:
        """``target`` sent byte for byte (the test client would otherwise resolve ``..`` and decode escapes)."""
        url = URL(str(self.client.make_url("/")).rstrip("/") + target, encoded=True)
        async with self.client.session.request(method, url, headers=headers, allow_redirects=False) as response:
            return Answer(response.status, response.headers, await response.read())


def build_app(
    clock: FakeClock,
    *,
    rules: str = "",
    public: tuple[str, ...] = (),
    oidc: StandInOidc | None = None,
    api_clients: frozenset[str] = frozenset(),
    skip_auth_preflight: bool = False,
    backend: SessionBackend | None = None,
    handler: Handler = echo,
) -> tuple[web.Application, SessionManager]:
    settings = Settings.from_env(ENV)
    stand_in = cast(OidcClient, oidc or StandInOidc())
    sessions = SessionManager(
        backend or CookieBackend(settings.session),
        settings.session,
        oidc=stand_in,
        audience=settings.provider.audience,
        clock=clock,
    )
    middleware = IdentityMiddleware(
        rules=AccessRules.build(public_paths=public, rules=parse_rules(rules)),
        sessions=sessions,
        bearer=BearerTokens(stand_in, api_clients) if api_clients else None,
        route_policies={"healthz": None, "userinfo": Policy("authenticated")},
        skip_auth_preflight=skip_auth_preflight,
    )
    app = web.Application(middlewares=[error_middleware, middleware])
    app[SETTINGS], app[OIDC], app[SESSIONS] = settings, stand_in, sessions
    app[LOGINS] = LoginStates(settings.session, clock)
    app.on_response_prepare.append(sessions.write_cookies)
    app.router.add_get("/oauth2/healthz", handler, name="healthz")
    app.router.add_get("/oauth2/userinfo", handler, name="userinfo")
    app.router.add_route("*", "/{tail:.*}", handler, name="proxy")
    return app, sessions
