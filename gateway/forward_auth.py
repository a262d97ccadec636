"""``GET /oauth2/auth``: the yes/no a front proxy asks for (nginx ``auth_request``, Caddy ``forward_auth``, Traefik
``ForwardAuth``), in oauth2-proxy's terms: 202 with ``X-Auth-Request-*`` identity headers, 401 without an identity,
403 when the rules refuse.

The decision is made on the *original* request, which the front proxy describes in ``X-Forwarded-Uri``,
``-Method``, ``-Host`` (Caddy, Traefik) or ``X-Original-URL`` / ``-Method`` (nginx). Those headers are believed only
from GATEWAY_TRUSTED_PROXIES; from anyone else they are ignored and the global rule applies, as if the path matched
no rule, so a client cannot name a public path to get a yes for a protected one. ``?allowed_groups=`` and
``?allowed_email_domains=`` and ``?allowed_emails=`` narrow the decision per location, as oauth2-proxy's do.
"""

from __future__ import annotations

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from .access import Policy, email_domains
from .appkeys import IDENTIFY, SETTINGS
from .errors import BadRequest, NeedsSignIn, SignInFailed
from .headers import claim_values, header_value
from .identity import Identity


def _original(request: web.Request) -> tuple[str, str, CIMultiDictProxy[str]]:
    """The method, target and headers (with the original Host) of the request being decided on."""
    headers = request.headers
    url = headers.get("X-Forwarded-Uri") or headers.get("X-Original-URL") or headers.get("X-Original-URI") or "/"
    method = headers.get("X-Forwarded-Method") or headers.get("X-Original-Method") or "GET"
    if url.startswith("/"):
        # SECURITY: a path (what $request_uri, Traefik and Caddy send) is taken as a path, "//" included: read as a
        # URL, "//admin/public/x" would be decided as the public "/public/x" while the app is sent the original
        # target, which it may read as "/admin/public/x" (merged slashes).
        raw_path = url.partition("#")[0]
        host = headers.get("X-Forwarded-Host") or headers.get("Host", "")
    else:
        try:
            target = URL(url, encoded=True)
            host = headers.get("X-Forwarded-Host") or target.raw_authority or headers.get("Host", "")
            raw_path = target.raw_path + (f"?{target.raw_query_string}" if target.raw_query_string else "")
        except ValueError:  # a backslash in the authority, a bad IPv6 literal: not a URL any proxy sends
            raise BadRequest("The original request's URI is not a valid URL.", code="invalid_target") from None
    if not raw_path.startswith("/"):
        raise BadRequest("The original request's URI must be a path.", code="invalid_target")
    original = CIMultiDict(headers)
    original["Host"] = host
    return method.upper(), raw_path, CIMultiDictProxy(original)


def _listed(request: web.Request, name: str) -> list[str]:
    return [value.strip() for value in request.query.get(name, "").split(",") if value.strip()]


def _narrowing(request: web.Request) -> Policy | None:
    """oauth2-proxy's per-location narrowing: every list given must admit the user (groups: any one of them)."""
    groups = frozenset(_listed(request, "allowed_groups"))
    domains = email_domains(_listed(request, "allowed_email_domains"))
    emails = frozenset(email.lower() for email in _listed(request, "allowed_emails"))
    if not groups and not domains and not emails:
        return None
    return Policy("authenticated", groups=groups, email_domains=domains, emails=emails)


_AUTH_REQUEST_NAMES = {
    "user": "X-Auth-Request-User",
    "email": "X-Auth-Request-Email",
    "groups": "X-Auth-Request-Groups",
    "preferred": "X-Auth-Request-Preferred-Username",
}


def auth_request_headers(identity: Identity) -> dict[str, str]:
    """oauth2-proxy's names, for the front proxy to copy onto the request it forwards (a machine: its client id)."""
    if identity.username is None:
        return {"X-Auth-Request-User": header_value(identity.client_id or identity.sub)}
    values = claim_values(identity)
    return {name: values[key] for key, name in _AUTH_REQUEST_NAMES.items() if key in values}


async def auth(request: web.Request) -> web.Response:
    settings, identify = request.app[SETTINGS], request.app[IDENTIFY]
    # SECURITY: the description of the original request is believed only from the configured front proxies.
    if settings.access.trusts(request.remote):
        method, target, headers = _original(request)
        policy = identify.policy_for(target, method, headers)
    else:
        policy = settings.access.rules.default
    narrowing = _narrowing(request)
    try:
        identity = await identify.decide(request, policy)
        if narrowing is not None:
            narrowing.check(identity)
    except (NeedsSignIn, SignInFailed):  # SignInFailed: a refresh outgrew the cookies (the sign-in then says so)
        raise NeedsSignIn(redirect=False) from None  # nginx's auth_request takes only 2xx, 401 and 403
    response = web.Response(status=202, headers={"Cache-Control": "no-store"})
    if identity is not None and settings.access.set_xauthrequest:
        response.headers.update(auth_request_headers(identity))
    return response
