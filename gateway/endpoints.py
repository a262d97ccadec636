"""Sign-in, callback, sign-out and userinfo: the gateway's own endpoints under ``/oauth2/`` and the callback path.

They read ``request[IDENTITY]`` (set by the identity middleware) and raise the errors of ``errors``; the policy of
each is declared with its route in ``app.create_app``.
"""

from __future__ import annotations

import datetime
import logging
from urllib.parse import unquote

from aiohttp import web
from yarl import URL

from . import preserved_post
from .appkeys import LOGINS, OIDC, SESSIONS, SETTINGS
from .errors import BadRequest, SignInFailed
from .identity import IDENTITY
from .login_state import LoginAttempt
from .observe import OUTCOME, outcome_of
from .redirects import safe_redirect_path
from .responses import PAGE_HEADERS, SIGN_OUT_FORM, error_response, html_page, redirect, wants_html
from .session_manager import SESSION
from .user_session import UserSession

log = logging.getLogger("gateway.auth")

# IdP error codes shown by name; anything else is shown as "unknown" rather than reflected (RFC 6749 4.1.2.1).
_KNOWN_IDP_ERRORS = frozenset(
    {
        "invalid_request",
        "unauthorized_client",
        "access_denied",
        "unsupported_response_type",
        "invalid_scope",
        "server_error",
        "temporarily_unavailable",
        "login_required",
        "consent_required",
    }
)


def _single(request: web.Request, name: str) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        # SECURITY: a repeated parameter is ambiguous (parameter pollution); refuse rather than pick one.
        raise BadRequest(f"The {name} parameter appears more than once.")
    return values[0] if values else None


def _return_to(request: web.Request, *, default: str) -> str:
    # X-Auth-Request-Redirect: what nginx sets for a sign-in it starts with error_page (oauth2-proxy's name).
    rd = _single(request, "rd") or request.headers.get("X-Auth-Request-Redirect")
    if rd is None or rd == "":
        return default
    rd = _same_origin_path(request, rd)
    if safe_redirect_path(rd) is None:
        log.warning("rejected rd %r", rd[:200])
        raise BadRequest("The rd parameter must be a path on this site, such as /reports?id=1.", code="invalid_rd")
    return _not_our_endpoint(request, rd)


def _same_origin_path(request: web.Request, rd: str) -> str:
    """An absolute ``rd`` on the public URL's own origin (``{scheme}://{host}{uri}``, as front proxies build it) is
    its path; any other absolute URL stays as it is and is refused by the path check."""
    if rd.startswith("/"):
        return rd
    public = request.app[SETTINGS].public_url
    try:
        target = URL(rd, encoded=True)
        same_origin = target.is_absolute() and target.origin() == public.origin()
    except ValueError:
        # SECURITY: what yarl cannot parse (a backslash in the authority, a bad port or IPv6 literal) or an
        # authority without a scheme (" //evil.example" once yarl strips the space) is no URL of ours: it stays as it
        # is and the path check refuses it with a 400, never a 500.
        return rd
    return target.raw_path_qs if same_origin else rd


def _not_our_endpoint(request: web.Request, target: str) -> str:
    """``/`` instead of the callback, sign-in or sign-out: a sign-in must never end in a loop or a replayed callback."""
    path = unquote(URL(target, encoded=True).path)
    own = (request.app[SETTINGS].callback_path, "/oauth2/sign_in", "/oauth2/start", "/oauth2/sign_out")
    return "/" if path.rstrip("/") in own else target


async def start_sign_in(request: web.Request, return_to: str) -> web.Response:
    """302 to the IdP's authorize endpoint, with a fresh state, nonce and PKCE verifier kept in a login cookie."""
    logins = request.app[LOGINS]
    attempt = logins.new(safe_redirect_path(return_to) or "/")
    location = request.app[OIDC].authorize_url(
        state=attempt.state,
        nonce=attempt.nonce,
        code_challenge=attempt.code_challenge,
        redirect_uri=request.app[SETTINGS].redirect_uri,
    )
    response = redirect(location)
    logins.remember(request, response, attempt)
    return response


async def sign_in(request: web.Request) -> web.StreamResponse:
    """Always a fresh sign-in, even with a session: a session planted by someone else can always be replaced by
    the user's own (the callback starts a new session, whatever the browser had)."""
    return await start_sign_in(request, _return_to(request, default="/"))


async def callback(request: web.Request) -> web.StreamResponse:
    logins = request.app[LOGINS]
    state, error = _single(request, "state"), _single(request, "error")
    if error is not None:
        response = _idp_error(request, error)
        if state:
            logins.forget(request, response, state)
        return response
    code, iss = _single(request, "code"), _single(request, "iss")
    if not state or not code:
        raise BadRequest("This sign-in link is incomplete.", code="invalid_callback")
    # SECURITY: RFC 9207: a provider that names itself in the callback must be ours (mix-up attacks).
    if iss is not None and iss != request.app[SETTINGS].provider.issuer:
        log.warning("callback from issuer %r, expected %r", iss[:200], request.app[SETTINGS].provider.issuer)
        raise SignInFailed("This sign-in came back from another identity provider.", code="invalid_issuer")
    attempt = logins.take(request, state)
    if attempt is None:
        # SECURITY: no login cookie for this state: a forged or replayed callback (login CSRF), or an expired one.
        log.info("callback with unknown or used state")
        raise SignInFailed(
            "This sign-in has expired or was started elsewhere. Please sign in again.", code="invalid_state"
        )
    try:
        response = await _complete_sign_in(request, attempt, code)
    except SignInFailed as exc:
        response = _failure_page(request, exc)
    logins.forget(request, response, state)  # single use, whatever the outcome
    return response


async def _complete_sign_in(request: web.Request, attempt: LoginAttempt, code: str) -> web.Response:
    signed_in = await request.app[OIDC].sign_in(
        code=code, verifier=attempt.verifier, nonce=attempt.nonce, redirect_uri=request.app[SETTINGS].redirect_uri
    )
    # A new session (and new cookie) at every sign-in: nothing from before sign-in carries over (fixation).
    session = await request.app[SESSIONS].start(request, signed_in)
    log.info("signed in %r (sub %r)", session.username, session.identity.sub)
    return preserved_post.resume_page(request, attempt) if attempt.post else redirect(attempt.return_to)


def _idp_error(request: web.Request, error: str) -> web.Response:
    # The IdP's error comes first; its description is logged, never shown (it is attacker-controllable).
    log.info("IdP returned error=%r description=%r", error[:64], (_single(request, "error_description") or "")[:200])
    return _failure_page(
        request,
        SignInFailed(
            "The identity provider did not complete the sign-in.",
            code=error if error in _KNOWN_IDP_ERRORS else "unknown_error",
            status=403 if error == "access_denied" else 400,
        ),
    )


def _failure_page(request: web.Request, error: SignInFailed) -> web.Response:
    request[OUTCOME] = outcome_of(error)
    return error_response(
        request, error.status, error.title, error.message, code=error.code, link=("/oauth2/sign_in", "Sign in again")
    )


async def sign_out(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    return_to = _return_to(request, default=settings.sign_out_redirect)
    oidc = request.app[OIDC]
    session = await request.app[SESSIONS].end(request)
    target = oidc.end_session_url(str(settings.public_url.join(URL(return_to)))) or return_to
    response = redirect(target)
    request.app[LOGINS].clear_all(request, response)
    if session is not None:
        if session.refresh_token:
            await oidc.revoke(session.refresh_token)
        log.info("signed out %r", session.username)
    return response


async def reserved(request: web.Request) -> web.StreamResponse:
    """A gateway path with a method it does not take: 405, with ``Allow``; such a request never reaches the
    upstream."""
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource.name not in ("reserved", "reserved_callback", "proxy"):
            match, methods = await resource.resolve(request)
            allowed |= methods if match is None else set()
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, sorted(allowed))
    raise web.HTTPNotFound()


async def userinfo(request: web.Request) -> web.StreamResponse:
    return web.json_response(_identity_body(request), headers=PAGE_HEADERS)


def _identity_body(request: web.Request) -> dict[str, object]:
    identity = request[IDENTITY]
    assert identity is not None, "the route's policy requires an identity"
    body: dict[str, object] = {
        "user": identity.username,
        "email": identity.email,
        "groups": list(identity.groups),
        "preferredUsername": identity.preferred_username,
        "sub": identity.sub,
    }
    if identity.is_machine:
        body["clientId"] = identity.client_id
    if identity.scopes:
        body["scopes"] = sorted(identity.scopes)
    session = request.get(SESSION)
    if session is not None:
        body["sessionEndsAt"] = _session_end(request, session)
    return body


def _session_end(request: web.Request, session: UserSession) -> str:
    """When the session ends at the latest: its absolute lifetime (the idle timeout may end it sooner)."""
    ends = session.created_at + request.app[SETTINGS].session.lifetime
    return datetime.datetime.fromtimestamp(ends, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def who_am_i(request: web.Request) -> web.StreamResponse:
    """``/oauth2/``: who the gateway says you are, for people (a page with sign-out) and for scripts (JSON)."""
    body, identity = _identity_body(request), request[IDENTITY]
    if not wants_html(request):
        return web.json_response(body, headers=PAGE_HEADERS)
    assert identity is not None
    paragraphs = [f"Groups: {', '.join(identity.groups) or 'none'}."]
    if "sessionEndsAt" in body:
        idle = request.app[SETTINGS].session.idle_timeout // 60
        paragraphs.append(f"Your session ends at {body['sessionEndsAt']} at the latest, or after {idle} idle minutes.")
    page = html_page(
        "Who am I",
        f"Signed in as {identity.name}" + (f" ({identity.email})." if identity.email else "."),
        paragraphs=tuple(paragraphs),
        actions=SIGN_OUT_FORM,
    )
    return web.Response(text=page, content_type="text/html", headers=PAGE_HEADERS)
