"""The hosted-UI pages: ``/login``, ``/signup``, ``/confirm`` and ``/error``.

Each page takes the authorize parameters in its query string, as Cognito's do, and ends in the same place a
successful ``/oauth2/authorize`` does: a redirect to the app with a code. Forms carry a double-submit CSRF token
(an ``XSRF-TOKEN`` cookie and a ``_csrf`` field), like Cognito's classic UI.
"""

from __future__ import annotations

import hmac
import secrets

from aiohttp import web
from yarl import URL

from . import pages
from .authorize_request import AuthorizeRequest, RedirectableError, UntrustedRequest, parse_authorize_request
from .directory import UNCONFIRMED, User
from .forms import read_form
from .pool import HOSTED_UI_COOKIE, POOL, XSRF_COOKIE, Pool, log, redirect
from .tokens import Grant

_FORM_LIMIT = 256  # characters per form field; longer input is refused, not stored


def _html(body: str, status: int = 200) -> web.Response:
    response = web.Response(text=body, status=status, content_type="text/html")
    response.headers["Cache-Control"] = "no-store"
    return response


def _parse_or_redirect(request: web.Request) -> AuthorizeRequest:
    """The page's authorize parameters, or the redirect that Cognito would answer bad ones with."""
    try:
        return parse_authorize_request(request.query, request.app[POOL].directory)
    except UntrustedRequest as exc:
        raise web.HTTPFound(exc.location()) from None
    except RedirectableError as exc:
        raise web.HTTPFound(exc.location()) from None


def _csrf_token(request: web.Request) -> str:
    token = request.cookies.get(XSRF_COOKIE)
    return token if token and len(token) == 43 else secrets.token_urlsafe(32)


def _with_csrf(request: web.Request, response: web.Response, token: str) -> web.Response:
    pool = request.app[POOL]
    response.set_cookie(XSRF_COOKIE, token, path="/", httponly=True, samesite="Lax", secure=pool.secure_cookies)
    return response


async def _form(request: web.Request) -> dict[str, str]:
    """The submitted form, with the CSRF check done; a forged or malformed post gets a 400 page."""
    fields = await read_form(request, max_field=_FORM_LIMIT)
    if fields is None:
        raise web.HTTPBadRequest(text=pages.error_page("invalid_request"), content_type="text/html")
    cookie = request.cookies.get(XSRF_COOKIE, "")
    # SECURITY: double-submit token: a cross-site form post cannot read our cookie to copy it into the form.
    if not cookie or not hmac.compare_digest(cookie.encode(), fields.get("_csrf", "").encode()):
        raise web.HTTPForbidden(text=pages.error_page("Invalid CSRF token"), content_type="text/html")
    return fields


def _sign_in(request: web.Request, auth: AuthorizeRequest, user: User) -> web.Response:
    """Start a hosted-UI session for ``user`` and send the browser back to the app with a code."""
    pool = request.app[POOL]
    session_id = pool.grants.start_session(user.username)
    response = redirect(issue_code(pool, auth, user))
    response.set_cookie(
        HOSTED_UI_COOKIE,
        session_id,
        path="/",
        httponly=True,
        samesite="Lax",
        secure=pool.secure_cookies,
        max_age=3600,
    )
    return response


def issue_code(pool: Pool, auth: AuthorizeRequest, user: User) -> str:
    grant = Grant(
        username=user.username,
        client_id=auth.client.client_id,
        scopes=auth.scopes,
        auth_time=int(pool.clock()),
        origin_jti=str(secrets.token_hex(16)),
    )
    code = pool.grants.issue_code(
        grant, redirect_uri=auth.redirect_uri, code_challenge=auth.code_challenge, nonce=auth.nonce
    )
    return auth.success_location(code)


def _action(request: web.Request, path: str, **extra: str) -> str:
    return str(URL(path).with_query(request.query).update_query(extra))


async def login_get(request: web.Request) -> web.Response:
    _parse_or_redirect(request)
    token = _csrf_token(request)
    body = pages.login_page(
        action=_action(request, "/login"), csrf=token, error=None, signup_url=_action(request, "/signup")
    )
    return _with_csrf(request, _html(body), token)


async def login_post(request: web.Request) -> web.Response:
    auth = _parse_or_redirect(request)
    fields = await _form(request)
    pool = request.app[POOL]
    username = fields.get("username", "").strip()
    user = pool.directory.find_user(username) if username else None
    error = None
    # SECURITY: one message for an unknown user and a wrong password, so the form does not enumerate users.
    if user is None or not hmac.compare_digest(user.password.encode(), fields.get("password", "").encode()):
        error = "Incorrect username or password."
    elif not user.enabled:
        error = "User is disabled."
    elif user.status == UNCONFIRMED:
        raise web.HTTPFound(_action(request, "/confirm", username=user.username))
    if error is not None or user is None:
        log.info("sign-in refused for %r: %s", username[:64], error)
        token = _csrf_token(request)
        body = pages.login_page(
            action=_action(request, "/login"),
            csrf=token,
            error=error,
            username=username,
            signup_url=_action(request, "/signup"),
        )
        return _with_csrf(request, _html(body, 200), token)
    log.info("signed in %s for client %s", user.username, auth.client.client_id)
    return _sign_in(request, auth, user)


async def signup_get(request: web.Request) -> web.Response:
    _parse_or_redirect(request)
    token = _csrf_token(request)
    return _with_csrf(
        request, _html(pages.signup_page(action=_action(request, "/signup"), csrf=token, error=None)), token
    )


def _signup_problem(pool: Pool, username: str, email: str, password: str) -> str | None:
    if not username or any(ch.isspace() for ch in username) or len(username) > 128:
        return "Username must be 1 to 128 characters without spaces."
    if "@" not in email or email.startswith("@") or email.endswith("@"):
        return "Invalid email address format."
    if len(password) < 8:
        return "Password did not conform with policy: Password not long enough"
    if pool.directory.find_user(username) is not None or pool.directory.find_user(email) is not None:
        return "User already exists"
    return None


async def signup_post(request: web.Request) -> web.Response:
    auth = _parse_or_redirect(request)
    fields = await _form(request)
    pool = request.app[POOL]
    username, email = fields.get("username", "").strip(), fields.get("email", "").strip()
    password = fields.get("password", "")
    problem = _signup_problem(pool, username, email, password)
    if problem is not None:
        token = _csrf_token(request)
        body = pages.signup_page(
            action=_action(request, "/signup"), csrf=token, error=problem, username=username, email=email
        )
        return _with_csrf(request, _html(body), token)
    user = pool.directory.add_unconfirmed_user(username, password, email, auto_confirm=pool.auto_confirm)
    if pool.auto_confirm:
        log.info("signed up %s (auto-confirmed)", username)
        return _sign_in(request, auth, user)
    # Nothing is e-mailed here: the code goes to the log, where the person running dev_idp can read it.
    log.warning("confirmation code for %s: %s", username, user.confirmation_code)
    raise web.HTTPFound(_action(request, "/confirm", username=username))


async def confirm_get(request: web.Request) -> web.Response:
    _parse_or_redirect(request)
    token = _csrf_token(request)
    username = request.query.get("username", "")[:_FORM_LIMIT]
    body = pages.confirm_page(action=_action(request, "/confirm"), csrf=token, error=None, username=username)
    return _with_csrf(request, _html(body), token)


async def confirm_post(request: web.Request) -> web.Response:
    auth = _parse_or_redirect(request)
    fields = await _form(request)
    pool = request.app[POOL]
    username = fields.get("username", "").strip()
    user = pool.directory.users.get(username)
    code = fields.get("code", "").strip()
    if (
        user is None
        or user.status != UNCONFIRMED
        or user.confirmation_code is None
        or not hmac.compare_digest(user.confirmation_code.encode(), code.encode())
    ):
        token = _csrf_token(request)
        body = pages.confirm_page(
            action=_action(request, "/confirm"),
            csrf=token,
            error="Invalid verification code provided, please try again.",
            username=username,
        )
        return _with_csrf(request, _html(body), token)
    user.status, user.email_verified, user.confirmation_code = "CONFIRMED", True, None
    log.info("confirmed %s", username)
    return _sign_in(request, auth, user)


async def error_get(request: web.Request) -> web.Response:
    return _html(pages.error_page(request.query.get("error", "")[:200]), status=400)


async def index(request: web.Request) -> web.Response:
    pool = request.app[POOL]
    return _html(pages.index_page(issuer=pool.issuer, discovery=f"{pool.issuer}/.well-known/openid-configuration"))
