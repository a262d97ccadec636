"""The one place where outcomes and failures become answers.

- ``NeedsSignIn``: a browser navigation is sent to sign in (302 to the IdP, with fresh login state); anything else
  gets 401 JSON with ``WWW-Authenticate: Bearer`` and where to sign in, because a redirect to the IdP is useless to
  (and, through CORS, breaks) a script.
- ``InvalidBearer`` / ``InsufficientScope``: 401 / 403 with RFC 6750's ``WWW-Authenticate`` error.
- ``Forbidden``: a 403 page that says who you are and offers sign-out (JSON for API clients); never a redirect,
  which would loop.
- Every other ``GatewayError`` and HTTP error: its status with a page or JSON; anything unexpected: a plain 500.
"""

from __future__ import annotations

import logging

from aiohttp import web
from yarl import URL

from . import preserved_post
from .endpoints import start_sign_in
from .errors import AccessOutcome, Forbidden, GatewayError, InsufficientScope, InvalidBearer, NeedsSignIn
from .identity import IDENTITY
from .observe import CLIENT_CLOSED, OUTCOME, SENT_STATUS, SERVER_ERROR, outcome_of
from .redirects import safe_redirect_path
from .responses import error_response, forbidden_response, is_navigation

log = logging.getLogger("gateway")


def _challenge(request: web.Request, error: str | None = None, **params: str) -> str:
    realm = request.url.host or "gateway"
    parts = [f'realm="{realm}"'] + ([f'error="{error}"'] if error else []) + [f'{k}="{v}"' for k, v in params.items()]
    return "Bearer " + ", ".join(parts)


def unauthorized(request: web.Request) -> web.Response:
    """401 for API clients: JSON, a WWW-Authenticate challenge, and where to sign in; never a redirect."""
    rd = request.raw_path if safe_redirect_path(request.raw_path) else "/"
    return error_response(
        request,
        401,
        "Sign-in required",
        "Sign-in required.",
        code="unauthorized",
        json_only=True,
        extra={"sign_in_url": str(URL("/oauth2/sign_in").with_query(rd=rd))},
        headers={"WWW-Authenticate": _challenge(request)},
    )


async def _access_answer(request: web.Request, outcome: GatewayError) -> web.StreamResponse:
    if isinstance(outcome, NeedsSignIn):
        if outcome.redirect and preserved_post.applies(request):
            return await preserved_post.keep(request)
        navigation = outcome.redirect and is_navigation(request)
        request[OUTCOME] = outcome_of(outcome, redirected=navigation)
        return await start_sign_in(request, request.raw_path) if navigation else unauthorized(request)
    if isinstance(outcome, InvalidBearer):
        challenge = _challenge(request, "invalid_token", error_description=outcome.message)
        return error_response(
            request,
            401,
            outcome.title,
            outcome.message,
            code=outcome.code,
            json_only=True,
            headers={"WWW-Authenticate": challenge},
        )
    if isinstance(outcome, InsufficientScope):
        challenge = _challenge(request, "insufficient_scope", scope=" ".join(sorted(outcome.scopes)))
        return error_response(
            request, 403, outcome.title, outcome.message, code=outcome.code, headers={"WWW-Authenticate": challenge}
        )
    assert isinstance(outcome, Forbidden)
    return forbidden_response(request, outcome.message, request.get(IDENTITY))


def _error_answer(request: web.Request, exc: GatewayError) -> web.Response:
    request[OUTCOME] = outcome_of(exc)
    link = ("/oauth2/sign_in", "Sign in again") if exc.status in (400, 401, 403) else None
    return error_response(request, exc.status, exc.title, exc.message, code=exc.code, link=link)


def _client_left(request: web.Request) -> web.Response:
    """The client went away before its answer (mid-upload): nothing failed here and nobody reads the answer. Without
    this, aiohttp logs a traceback and a 500 for it, which anyone could repeat to fill the log."""
    request[OUTCOME] = CLIENT_CLOSED
    log.info("client closed the connection before its answer (%s %s)", request.method, request.rel_url.raw_path[:300])
    # nginx's "client closed request": the access line and the metrics say what happened; it is never received.
    return web.Response(status=499, reason="Client Closed Request")


@web.middleware
async def error_middleware(request: web.Request, handler: web.Handler) -> web.StreamResponse:
    try:
        return await _answered(request, handler)
    except ConnectionResetError:  # from the handler, or while answering (a kept form's body is read there)
        if SENT_STATUS in request:  # its answer had begun: aiohttp ends the connection
            raise
        return _client_left(request)


async def _answered(request: web.Request, handler: web.Handler) -> web.StreamResponse:
    """The handler's response, or the answer to what it raised."""
    try:
        return await handler(request)
    except AccessOutcome as outcome:
        request[OUTCOME] = outcome_of(outcome)
        try:
            return await _access_answer(request, outcome)
        except GatewayError as exc:  # starting a sign-in needs the IdP's endpoints
            return _error_answer(request, exc)
    except GatewayError as exc:
        return _error_answer(request, exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        request[OUTCOME] = outcome_of(exc)
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None  # a 405 says what is allowed
        code = exc.reason.lower().replace(" ", "_")
        return error_response(request, exc.status, exc.reason, exc.reason, code=code, headers=allow)
    except ConnectionResetError:
        raise  # error_middleware's
    except Exception:
        request[OUTCOME] = SERVER_ERROR
        # SECURITY: no stack trace or exception text reaches the client; the log has the details.
        log.exception("unhandled error on %s %s", request.method, request.rel_url.raw_path[:300])
        return error_response(
            request, 500, "Something went wrong", "The gateway could not handle this request.", code="server_error"
        )
