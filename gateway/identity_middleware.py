"""The identity middleware: who the request comes from, and whether the path's rule lets them through.

For every request, in this order: the rule of the path (``access``; an ambiguous path is a 400, ``deny`` a 403
before anything else), the identity (a Bearer token when API clients are enabled and one is sent, else the session
cookie, refreshed when due), then the rule's check, which raises ``NeedsSignIn``, ``Forbidden`` or
``InsufficientScope``. The result is ``request[IDENTITY]``; handlers read it and decide nothing themselves.
The gateway's own endpoints carry their policy on their route (``ROUTE_POLICIES``); everything else is proxied
under the configured rules. On a public path the identity is still resolved and sent upstream, but a bad token or
an unreachable session store there makes the request anonymous instead of failing it.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web
from aiohttp.typedefs import Handler
from multidict import CIMultiDictProxy

from .access import AccessRules, Policy
from .bearer import BearerTokens
from .errors import InvalidBearer, SignInFailed, StoreUnavailable
from .identity import IDENTITY, Identity
from .path_table import request_host
from .session_manager import SESSION, SessionManager

PUBLIC = Policy("public")


def is_preflight(method: str, headers: CIMultiDictProxy[str]) -> bool:
    """A CORS preflight: OPTIONS with Origin and Access-Control-Request-Method (browsers send no cookies)."""
    return method == "OPTIONS" and "Origin" in headers and "Access-Control-Request-Method" in headers


class IdentityMiddleware:
    """The middleware itself (aiohttp 3.x recognises it by ``__middleware_version__``)."""

    __middleware_version__ = 1

    def __init__(
        self,
        *,
        rules: AccessRules,
        sessions: SessionManager,
        bearer: BearerTokens | None,
        route_policies: Mapping[str, Policy | None],
        skip_auth_preflight: bool = False,
    ) -> None:
        """``route_policies``: route name → its policy, or None for endpoints that need no identity at all."""
        self._rules = rules
        self._sessions = sessions
        self._bearer = bearer
        self._route_policies = route_policies
        self._skip_auth_preflight = skip_auth_preflight

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        name = request.match_info.route.name
        if name is not None and name in self._route_policies:
            policy = self._route_policies[name]
        else:
            policy = self.policy_for(request.raw_path, request.method, request.headers)
        if policy is None:
            request[IDENTITY] = None
        else:
            await self.decide(request, policy)
        return await handler(request)

    def policy_for(self, raw_target: str, method: str, headers: CIMultiDictProxy[str]) -> Policy:
        """The rule of a request (the proxied one, or the original one a front proxy asks about)."""
        host = request_host(headers.get("Host")) if self._rules.has_hosts else None
        policy = self._rules.policy_for(raw_target.partition("?")[0], host)
        if self._skip_auth_preflight and policy.kind != "deny" and is_preflight(method, headers):
            return PUBLIC
        return policy

    async def decide(self, request: web.Request, policy: Policy) -> Identity | None:
        """Resolve the identity into ``request[IDENTITY]`` and apply ``policy``; raises the outcome when it says no."""
        if policy.kind == "deny":
            policy.check(None)
        identity = await self._resolve(request, policy)
        request[IDENTITY] = identity  # before the check: the 403 page says who was refused
        policy.check(identity)
        return identity

    async def _resolve(self, request: web.Request, policy: Policy) -> Identity | None:
        try:
            token = self._bearer.presented(request) if self._bearer is not None else None
            if token is not None and self._bearer is not None:
                return await self._bearer.identity(token)
            session = await self._sessions.current(request)
        except (InvalidBearer, StoreUnavailable, SignInFailed):  # SignInFailed: a refresh outgrew the cookies
            if policy.kind == "public":
                return None
            raise
        if session is None:
            return None
        request[SESSION] = session
        return session.identity
