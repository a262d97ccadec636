"""Sign-in, callback, sign-out and userinfo: the gateway's own endpoints under ``/oauth2/`` and the callback path."""

from __future__ import annotations

import json
import logging
import time

from aiohttp import web
from yarl import URL

from .appkeys import IDP, LOGINS, PROVIDER, SESSIONS, SETTINGS, VERIFIER
from .errors import BadRequest, InvalidToken, SignInFailed
from .login import LoginAttempt
from .redirects import safe_redirect_path
from .responses import error_response, is_navigation, redirect
from .session import UserSession

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
    rd = _single(request, "rd")
    if rd is None or rd == "":
        return default
    if safe_redirect_path(rd) is None:
        log.warning("rejected rd %r", rd[:200])
        raise BadRequest("The rd parameter must be a path on this site, such as /reports?id=1.", code="invalid_rd")
    return rd


async def start_sign_in(request: web.Request, return_to: str) -> web.Response:
    """302 to the IdP's authorize endpoint, with a fresh state, nonce and PKCE verifier kept in a login cookie."""
    endpoints = request.app[PROVIDER].endpoints()
    logins = request.app[LOGINS]
    attempt = LoginAttempt.new(safe_redirect_path(return_to) or "/", time.time())
    response = redirect(logins.authorize_url(endpoints.authorization, attempt))
    logins.remember(request, response, attempt)
    return response


def unauthorized(request: web.Request) -> web.Response:
    """401 for API clients: JSON, a WWW-Authenticate challenge, and where to sign in; never a redirect."""
    rd = request.raw_path if safe_redirect_path(request.raw_path) else "/"
    body = {
        "error": "unauthorized",
        "message": "Sign-in required.",
        "sign_in_url": str(URL("/oauth2/sign_in").with_query(rd=rd)),
    }
    response = web.Response(text=json.dumps(body), status=401, content_type="application/json")
    response.headers["WWW-Authenticate"] = f'Bearer realm="{request.app[SETTINGS].public_url.host}"'
    response.headers["Cache-Control"] = "no-store"
    return response


async def require_session(request: web.Request) -> UserSession | web.StreamResponse:
    """The request's session, or the answer that asks for one: a sign-in redirect for navigations, else 401."""
    session = await request.app[SESSIONS].current(request)
    if session is not None:
        return session
    if is_navigation(request):
        return await start_sign_in(request, request.raw_path)
    return unauthorized(request)


async def sign_in(request: web.Request) -> web.StreamResponse:
    return_to = _return_to(request, default="/")
    if await request.app[SESSIONS].current(request) is not None:
        return redirect(return_to)
    return await start_sign_in(request, return_to)


async def callback(request: web.Request) -> web.StreamResponse:
    logins = request.app[LOGINS]
    state, error = _single(request, "state"), _single(request, "error")
    if error is not None:
        # The IdP's error comes first; its description is logged, never shown (it is attacker-controllable).
        log.info(
            "IdP returned error=%r description=%r", error[:64], (_single(request, "error_description") or "")[:200]
        )
        response = _failure_page(
            request,
            SignInFailed(
                "The identity provider did not complete the sign-in.",
                code=error if error in _KNOWN_IDP_ERRORS else "unknown_error",
                status=403 if error == "access_denied" else 400,
            ),
        )
        if state:
            logins.forget(request, response, state)
        return response
    code = _single(request, "code")
    if not state or not code:
        raise BadRequest("This sign-in link is incomplete.", code="invalid_callback")
    attempt = logins.take(request, state)
    if attempt is None:
        # SECURITY: no login cookie for this state: a forged or replayed callback (login CSRF), or an expired one.
        log.info("callback with unknown or used state")
        raise SignInFailed(
            "This sign-in has expired or was started elsewhere. Please sign in again.", code="invalid_state"
        )
    try:
        session = await _complete_sign_in(request, attempt, code)
    except SignInFailed as exc:
        response = _failure_page(request, exc)
    else:
        response = redirect(attempt.return_to)
        # A new session (and new cookie) at every sign-in: nothing from before sign-in carries over (fixation).
        await request.app[SESSIONS].start(request, session)
        log.info("signed in %s (sub %s)", session.username, session.sub)
    logins.forget(request, response, state)  # single use, whatever the outcome
    return response


async def _complete_sign_in(request: web.Request, attempt: LoginAttempt, code: str) -> UserSession:
    """Exchange the code and verify both tokens; raises SignInFailed or IdpUnavailable."""
    provider = request.app[PROVIDER]
    endpoints = provider.endpoints()
    tokens = await request.app[IDP].exchange_code(
        endpoints, code=code, verifier=attempt.verifier, redirect_uri=request.app[SETTINGS].redirect_uri
    )
    verifier = request.app[VERIFIER]
    assert provider.jwks is not None
    try:
        id_claims = await verifier.verify_id_token(
            provider.jwks, tokens.id_token, nonce=attempt.nonce, access_token=tokens.access_token
        )
        access_claims = await verifier.verify_access_token(provider.jwks, tokens.access_token)
    except InvalidToken as exc:
        log.warning("rejected tokens from the IdP: %s", exc)
        raise SignInFailed(
            "The sign-in could not be verified. Please sign in again.", code="invalid_token", status=401
        ) from None
    return UserSession.from_claims(
        id_claims,
        refresh_token=tokens.refresh_token,
        now=time.time(),
        token_expires_at=int(min(id_claims["exp"], access_claims["exp"])),
    )


def _failure_page(request: web.Request, error: SignInFailed) -> web.Response:
    return error_response(
        request, error.status, error.title, error.message, code=error.code, link=("/oauth2/sign_in", "Sign in again")
    )


async def sign_out(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    return_to = _return_to(request, default=settings.sign_out_redirect)
    provider = request.app[PROVIDER]
    session = await request.app[SESSIONS].end(request)
    logout_uri = str(settings.public_url.join(URL(return_to)))
    endpoints = provider.endpoints() if provider.ready else None
    if endpoints is not None and endpoints.end_session is not None:
        # Cognito's /logout ends the hosted-UI session too, so the next sign-in asks for the password.
        # logout_uri must be registered as a sign-out URL of the app client.
        target = str(
            URL(endpoints.end_session).update_query(client_id=settings.cognito.client_id, logout_uri=logout_uri)
        )
    else:
        target = return_to
    response = redirect(target)
    request.app[LOGINS].clear_all(request, response)
    if session is not None:
        if session.refresh_token and endpoints is not None:
            await request.app[IDP].revoke(endpoints, session.refresh_token)
        log.info("signed out %s", session.username)
    return response


async def userinfo(request: web.Request) -> web.StreamResponse:
    session = await request.app[SESSIONS].current(request)
    if session is None:
        return unauthorized(request)
    body = {
        "user": session.username,
        "email": session.email,
        "groups": list(session.groups),
        "preferredUsername": session.preferred_username,
        "sub": session.sub,
    }
    response = web.json_response(body)
    response.headers["Cache-Control"] = "no-store"
    return response
