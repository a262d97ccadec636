"""A browser form POST that arrives without a valid session is kept through the sign-in and sent again after it,
as mod_auth_openidc's ``OIDCPreservePost`` does, so an expired session never loses what someone typed.

1. ``keep``: the POST (``application/x-www-form-urlencoded``, from a browser, same-origin, at most
   GATEWAY_PRESERVE_POST_LIMIT bytes) is sealed (``crypto.Sealer``, its own key purpose, bound to the new sign-in's
   state) and handed to the browser in a small page that puts it in ``sessionStorage`` and goes on to the IdP.
   64 KiB does not fit in a cookie, and the gateway keeps no server-side state in cookie mode.
2. The callback of that sign-in answers with ``resume_page``: it posts the sealed form to ``/oauth2/post_restore``
   and sets a one-time cookie with the sign-in's state.
3. ``restore`` opens the form only with that cookie (single use, expiring with the login state) and answers with
   an auto-submitting form of the original fields to the original same-origin path.
Anything else (JSON, multipart, larger bodies, cross-site posts) gets the usual 401.
"""

from __future__ import annotations

import base64
import functools
import hmac
import json
import secrets
from html import escape
from urllib.parse import parse_qsl

from aiohttp import web

from .appkeys import LOGINS, OIDC, SETTINGS
from .bodies import invite_body
from .crypto import InvalidToken, Sealer
from .errors import BadRequest
from .login_state import LoginAttempt
from .redirects import safe_redirect_path
from .responses import PAGE_HEADERS, wants_html
from .session_cookies import CookieAttributes, request_cookies

POST_PURPOSE = b"cognito-gateway preserved post v1"
STORAGE_KEY = "cognito-gateway-post"
FORM_TYPE = "application/x-www-form-urlencoded"


def _marker(request: web.Request) -> str:
    return f"{request.app[SETTINGS].session.cookie_name}_post"


def _js(value: str) -> str:
    """A string literal for an inline script: JSON, with ``<`` escaped so no ``</script>`` can end it."""
    return json.dumps(value).replace("<", "\\u003c")


def _page(title: str, script: str, fallback: str, markup: str = "") -> web.Response:
    """``script``, ``fallback`` and ``markup`` are built in this module, with every value escaped."""
    nonce = secrets.token_urlsafe(16)
    body = (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{escape(title)}</title></head><body>"
        f"{markup}<script nonce={nonce}>{script}</script><noscript><p>{fallback}</p></noscript></body></html>"
    )
    # SECURITY: only this page's own script runs, and forms may go to this origin only.
    csp = f"default-src 'none'; script-src 'nonce-{nonce}'; form-action 'self'"
    return web.Response(text=body, content_type="text/html", headers={**PAGE_HEADERS, "Content-Security-Policy": csp})


def applies(request: web.Request) -> bool:
    """A browser's same-origin form POST small enough to keep."""
    limit = request.app[SETTINGS].session.preserve_post_limit
    length = request.content_length
    if request.method != "POST" or request.content_type != FORM_TYPE or not wants_html(request):
        return False
    if limit <= 0 or length is None or length > limit or safe_redirect_path(request.raw_path) is None:
        return False
    origin = request.headers.get("Origin")
    # SECURITY: a cross-site page must not be able to plant a form to be re-sent with the victim's new session.
    return origin is None or origin == str(request.app[SETTINGS].public_url.origin())


async def keep(request: web.Request) -> web.Response:
    """Step 1: seal the form to the sign-in it starts, and send the browser on to the IdP with it stored."""
    body = await request.read()
    logins = request.app[LOGINS]
    attempt = logins.new(request.raw_path, post=True)
    payload = {"s": attempt.state, "p": request.raw_path, "b": base64.b64encode(body).decode("ascii")}
    sealed = _sealer(request).seal(json.dumps(payload).encode()).decode("ascii")
    location = request.app[OIDC].authorize_url(
        state=attempt.state,
        nonce=attempt.nonce,
        code_challenge=attempt.code_challenge,
        redirect_uri=request.app[SETTINGS].redirect_uri,
    )
    script = f"sessionStorage.setItem({_js(STORAGE_KEY)}, {_js(sealed)}); location.replace({_js(location)});"
    response = _page("Signing in", script, "Your session has ended. Sign in again and send the form once more.")
    logins.remember(request, response, attempt)
    return response


def _sealer(request: web.Request) -> Sealer:
    return _sealer_for(request.app[SETTINGS].session.keys)


@functools.lru_cache(maxsize=8)
def _sealer_for(keys: tuple[bytes, ...]) -> Sealer:
    """Built once per set of secrets: deriving the keys (HKDF per secret and format) is not per-request work."""
    return Sealer(keys, POST_PURPOSE)


def resume_page(request: web.Request, attempt: LoginAttempt) -> web.Response:
    """Step 2, the callback's answer: post the stored form to ``/oauth2/post_restore``, or go on if there is none."""
    script = (
        f"var kept = sessionStorage.getItem({_js(STORAGE_KEY)}); sessionStorage.removeItem({_js(STORAGE_KEY)});"
        f"if (kept === null) {{ location.replace({_js(attempt.return_to)}); }} else {{"
        "var form = document.createElement('form'); form.method = 'post'; form.action = '/oauth2/post_restore';"
        "var field = document.createElement('input'); field.type = 'hidden'; field.name = 'sealed';"
        "field.value = kept; form.appendChild(field); document.body.appendChild(form); form.submit(); }"
    )
    response = _page("Signed in", script, f'Signed in. <a href="{escape(attempt.return_to)}">Continue</a>.')
    settings = request.app[SETTINGS].session
    CookieAttributes.for_login(settings).set(response, _marker(request), attempt.state, max_age=settings.login_timeout)
    return response


async def _open(request: web.Request) -> dict[str, str]:
    if request.content_type == FORM_TYPE:
        await invite_body(request)  # the route's expect handler sent no 100 Continue (bodies.expect_later)
        try:
            form = await request.post()
        except (LookupError, ValueError):  # SECURITY: a charset Python has no codec for, or bytes it cannot decode
            raise BadRequest("This form could not be restored.", code="post_not_kept") from None
    else:
        form = {}
    sealed, marker = form.get("sealed"), request_cookies(request).get(_marker(request))
    if not isinstance(sealed, str) or not marker:
        raise BadRequest("This form was already sent again, or its sign-in has expired.", code="post_not_kept")
    try:
        plain, _ = _sealer(request).open(sealed.encode("ascii"), ttl=request.app[SETTINGS].session.login_timeout)
        payload = json.loads(plain)
    except (InvalidToken, ValueError, UnicodeEncodeError):
        raise BadRequest("This form could not be restored.", code="post_not_kept") from None
    # SECURITY: single use, and only by the browser whose sign-in kept it (the marker cookie holds its state).
    if not isinstance(payload, dict) or not hmac.compare_digest(str(payload.get("s")).encode(), marker.encode()):
        raise BadRequest("This form was already sent again, or its sign-in has expired.", code="post_not_kept")
    return payload


async def restore(request: web.Request) -> web.Response:
    """Step 3: the original fields, as an auto-submitting form to the original path (same origin only)."""
    payload = await _open(request)
    path = safe_redirect_path(payload.get("p")) or "/"
    fields = parse_qsl(base64.b64decode(payload.get("b", "")).decode("utf-8", "replace"), keep_blank_values=True)
    inputs = "".join(
        f'<input type=hidden name="{escape(name, quote=True)}" value="{escape(value, quote=True)}">'
        for name, value in fields
    )
    form = f'<form id=f method=post action="{escape(path, quote=True)}" enctype="{FORM_TYPE}">{inputs}</form>'
    response = _page("Sending your form", "document.forms[0].submit();", "<button form=f>Send</button>", form)
    CookieAttributes.for_login(request.app[SETTINGS].session).expire(response, _marker(request))
    return response
