"""How the gateway answers: HTML pages for browsers, JSON for API clients, and the navigation test between them.

A request is a *browser navigation* when it is a GET or HEAD whose Accept header names HTML explicitly and which
no fetch/XHR marker disowns (``X-Requested-With``, ``Sec-Fetch-Mode`` other than ``navigate``). Only navigations are
redirected to sign in; everything else gets a 401 with a JSON body, because a redirect to the IdP is useless to
(and breaks, through CORS) a script.
"""

from __future__ import annotations

import functools
import json
from html import escape
from urllib.parse import quote

from aiohttp import web
from werkzeug.datastructures import MIMEAccept
from werkzeug.http import parse_accept_header

from .identity import Identity

_HTML_TYPES = ("text/html", "application/xhtml+xml")


def wants_html(request: web.Request) -> bool:
    """The client asked for HTML by name (``*/*`` alone, as curl and fetch send, is not enough)."""
    return _names_html(request.headers.get("Accept", ""))


# Browsers send a handful of distinct Accept values, so parsing each once saves werkzeug's parser on almost every
# request; the bound keeps a client that sends a new value each time from growing the cache.
@functools.lru_cache(maxsize=256)
def _names_html(accept: str) -> bool:
    parsed = parse_accept_header(accept, MIMEAccept)
    return any(value in _HTML_TYPES and quality > 0 for value, quality in parsed)


def is_navigation(request: web.Request) -> bool:
    if request.method not in ("GET", "HEAD") or not wants_html(request):
        return False
    if request.headers.get("X-Requested-With", "").lower() == "xmlhttprequest":
        return False
    return request.headers.get("Sec-Fetch-Mode", "navigate").lower() == "navigate"


_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:560px;margin:64px auto;padding:0 16px;color:#16191f}"
    "h1{font-size:22px}p{line-height:1.5}a{color:#0073bb}.code{color:#687078;font-size:13px}"
)


def html_page(
    title: str,
    message: str,
    *,
    link: tuple[str, str] | None = None,
    code: str | None = None,
    paragraphs: tuple[str, ...] = (),
    actions: str = "",
) -> str:
    """A small page. ``paragraphs`` are plain text (escaped here like everything else); ``actions`` is fixed
    markup of this module's own (a sign-out form), never built from request or claim data."""
    parts = [
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{escape(title)}</title>",
        f"<style>{_STYLE}</style></head><body><h1>{escape(title)}</h1><p>{escape(message)}</p>",
        *(f"<p>{escape(text)}</p>" for text in paragraphs),
    ]
    if link is not None:
        parts.append(f'<p><a href="{escape(link[0])}">{escape(link[1])}</a></p>')
    parts.append(actions)
    if code is not None:
        parts.append(f"<p class=code>{escape(code)}</p>")
    parts.append("</body></html>")
    return "".join(parts)


def error_response(
    request: web.Request,
    status: int,
    title: str,
    message: str,
    *,
    code: str,
    link: tuple[str, str] | None = None,
    headers: dict[str, str] | None = None,
    json_only: bool = False,
    extra: dict[str, object] | None = None,
    paragraphs: tuple[str, ...] = (),
    actions: str = "",
) -> web.Response:
    """One error, as a page for browsers and as ``{"error", "message", **extra}`` for everyone else."""
    if wants_html(request) and not json_only:
        page = html_page(title, message, link=link, code=code, paragraphs=paragraphs, actions=actions)
        response = web.Response(text=page, status=status, content_type="text/html")
    else:
        body = {"error": code, "message": message, **(extra or {})}
        response = web.Response(text=json.dumps(body), status=status, content_type="application/json")
    response.headers.update(PAGE_HEADERS)
    response.headers.update(headers or {})
    return response


# Printable ASCII without the space: what a Location may hold as sent. "%" stays, so escapes are not doubled.
_LOCATION_SAFE = "".join(chr(c) for c in range(0x21, 0x7F))
# SECURITY: the gateway's own pages and redirects carry codes, states and return paths: no MIME sniffing, no
# caching, and no Referer that would hand them to the next site.
PAGE_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def redirect(location: str) -> web.Response:
    """A 302 whose Location is printable ASCII whatever it was built from (a decoded rd, a Unicode path)."""
    # SECURITY: a raw space, control character or U+2028 in a Location splits or confuses the header downstream.
    # (Printable ASCII without a space is what quote would return unchanged: a sign-in's authorize URL always is.)
    printable = location.isascii() and location.isprintable() and " " not in location
    safe = location if printable else quote(location, safe=_LOCATION_SAFE, errors="replace")
    return web.Response(status=302, headers={"Location": safe, **PAGE_HEADERS})


SIGN_OUT_FORM = (
    '<form method=post action="/oauth2/sign_out"><button type=submit>Sign out</button></form>'
    '<p><a href="/oauth2/">Who am I</a> · <a href="/oauth2/sign_in">Sign in as someone else</a></p>'
)


def forbidden_response(request: web.Request, message: str, identity: Identity | None) -> web.Response:
    """403: who the gateway says you are, and a way out (sign-out), never a redirect that would loop."""
    who = None if identity is None else identity.name + (f" ({identity.email})" if identity.email else "")
    return error_response(
        request,
        403,
        "Access denied",
        message,
        code="forbidden",
        paragraphs=(f"Signed in as {who}.",) if who else (),
        actions=SIGN_OUT_FORM if identity is not None else "",
        extra={"user": identity.username if identity else None, "groups": list(identity.groups) if identity else []},
    )
