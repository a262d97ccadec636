"""The one place that knows the gateway's cookies: their names, their attributes, and how a value is chunked.

A Cognito refresh token alone is about 1.75 KB, so an encrypted session approaches a browser's 4 KB cookie limit;
the value is split across two numbered cookies (``name``, ``name_1``) when it must be, and every ``Set-Cookie``
stays under 4 KB. Login-state cookies (``name_login_…``) share the attributes, except SameSite,
which must let the IdP's cross-site redirect back to the callback carry them.

Cookies are read with aiohttp's parser (``request_cookies``); their attributes are written by the standard
library's ``Morsel`` (``CookieAttributes.header``). The aiohttp-session storages are not used: they hold one key
(no rotation), write one cookie (no chunks) and skip streamed responses, which are the three things this gateway
needs.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterable, Mapping
from http.cookies import Morsel

from aiohttp import web
from multidict import CIMultiDict

from .config import SessionSettings

CHUNK_SIZE = 3800  # value bytes per cookie: with name and attributes, each Set-Cookie stays under 4096
# Two chunks keep the Cookie header under 8 KiB with room for the app's own cookies: nginx, Apache and aiohttp's
# client refuse or silently drop longer ones. A bigger session needs the Redis store (a page says so).
MAX_CHUNKS = 2
CAPACITY = CHUNK_SIZE * MAX_CHUNKS
# The gateway's own server accepts longer Cookie headers than it ever writes (aiohttp's default is 8 KiB).
MAX_COOKIE_HEADER = 16 * 1024
_EPOCH = "Thu, 01 Jan 1970 00:00:00 GMT"


@dataclasses.dataclass(frozen=True)
class CookieAttributes:
    domain: str | None
    secure: bool
    samesite: str

    @classmethod
    def for_session(cls, settings: SessionSettings) -> CookieAttributes:
        # SECURITY: every flag explicit: HttpOnly always, Secure with https, SameSite from configuration.
        return cls(settings.domain, settings.secure, settings.samesite)

    @classmethod
    def for_login(cls, settings: SessionSettings) -> CookieAttributes:
        # The callback arrives as a top-level cross-site navigation from the IdP: Lax (or None) lets the cookie
        # come along; Strict would not.
        return cls(settings.domain, settings.secure, "None" if settings.samesite == "None" else "Lax")

    def set(
        self, response: web.StreamResponse, name: str, value: str, *, max_age: int, expires: str | None = None
    ) -> None:
        """Add the cookie's ``Set-Cookie`` to ``response``, replacing one this response already sets by that name.

        Headers, not ``response.set_cookie``: they can be added while the response is being prepared (the session
        is written from ``on_response_prepare``, after aiohttp has turned ``response.cookies`` into headers)."""
        headers = response.headers
        line = self.header(name, value, max_age=max_age, expires=expires)
        _drop_set_cookie(headers, name)
        headers.add(SET_COOKIE, line)

    def header(self, name: str, value: str, *, max_age: int, expires: str | None = None) -> str:
        """One ``Set-Cookie`` value: ``name=value`` and these attributes, as the standard library writes them."""
        # SECURITY: the gateway's names and values (base64url, hex, state tokens) need no quoting; anything else
        # could carry a "; Domain=…" of its own into the header, so it is refused, never written.
        if not _TOKEN.fullmatch(name) or not _COOKIE_OCTETS.fullmatch(value):
            raise ValueError(f"cookie {name[:40]!r} has characters a cookie value cannot carry unquoted")
        return f"{name}={value}{_attributes(self, max_age, expires)}"

    def expire(self, response: web.StreamResponse, name: str) -> None:
        self.set(response, name, "", max_age=0, expires=_EPOCH)


SET_COOKIE = "Set-Cookie"
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token: a cookie name
_COOKIE_OCTETS = re.compile(r"[\x21\x23-\x2B\x2D-\x3A\x3C-\x5B\x5D-\x7E]*")  # RFC 6265 cookie-octet


@functools.lru_cache(maxsize=512)
def _attributes(attributes: CookieAttributes, max_age: int, expires: str | None) -> str:
    """``; HttpOnly; Max-Age=…; Path=/; …`` written by ``http.cookies.Morsel``, once per distinct set: it is the same
    on every sign-in redirect, and building a Morsel per cookie was a tenth of such a redirect's CPU."""
    morsel: Morsel[str] = Morsel()
    morsel.set("c", "", "")
    morsel.update({"path": "/", "max-age": str(max_age), "httponly": True, "samesite": attributes.samesite})
    if expires is not None:
        morsel["expires"] = expires
    if attributes.domain is not None:
        morsel["domain"] = attributes.domain
    if attributes.secure:
        morsel["secure"] = True
    return morsel.OutputString()[len("c=") :]


def _drop_set_cookie(headers: CIMultiDict[str], name: str) -> None:
    """Remove a Set-Cookie of ``name`` (the last one set wins, as with ``response.cookies``); the others stay as
    they were, in their order: an upstream's own cookies included."""
    lines = headers.getall(SET_COOKIE, ())
    if not any(line.startswith(name + "=") for line in lines):
        return
    kept = [line for line in lines if not line.startswith(name + "=")]
    del headers[SET_COOKIE]
    for line in kept:
        headers.add(SET_COOKIE, line)


def cookie_pairs(values: Iterable[str]) -> list[tuple[str, str]]:
    """``(name, pair)`` for each ``name=value`` pair of the ``Cookie`` header(s), the pair byte for byte as sent."""
    pairs = []
    for value in values:
        for pair in value.split(";"):
            if pair.strip():
                pairs.append((pair.split("=", 1)[0].strip(), pair.strip()))
    return pairs


COOKIES = web.RequestKey[Mapping[str, str]]("cookies")


def request_cookies(request: web.Request) -> Mapping[str, str]:
    """The request's cookies from every Cookie header (aiohttp's ``request.cookies`` reads only the first).

    A client may split its cookies over several Cookie headers (aiohttp's client does for long ones; HTTP/2 allows
    it); they are joined as RFC 9113 8.2.3 says and parsed by aiohttp, once per request.
    """
    values = request.headers.getall("Cookie", [])
    if len(values) <= 1:
        return request.cookies
    cached = request.get(COOKIES)
    if cached is None:
        headers = request.headers.copy()
        headers["Cookie"] = "; ".join(values)
        cached = request[COOKIES] = request.clone(headers=headers).cookies
    return cached


def sent_once(request: web.Request, name: str) -> bool:
    """Whether the request carries exactly one cookie called ``name``, over all its Cookie headers.

    A parsed cookie mapping keeps one value per name; two cookies of one name (one tossed in by a sibling subdomain, or a second Cookie line) are ambiguous, so they count as none.
    """
    return sum(1 for found, _ in cookie_pairs(request.headers.getall("Cookie", [])) if found == name) == 1


def is_gateway_cookie(name: str, prefix: str) -> bool:
    """Whether a cookie belongs to the gateway (session chunks and login state), so it never goes upstream."""
    return name == prefix or name.startswith(prefix + "_")


class SessionCookies:
    """The session cookie's value, whole, however many numbered cookies carry it."""

    def __init__(self, settings: SessionSettings) -> None:
        self.name = settings.cookie_name
        self.attributes = CookieAttributes.for_session(settings)
        self._names = [self.name if i == 0 else f"{self.name}_{i}" for i in range(MAX_CHUNKS)]

    @staticmethod
    def fits(value: str) -> bool:
        return len(value) <= CAPACITY

    def read(self, request: web.Request) -> str | None:
        cookies = request_cookies(request)
        # SECURITY: "first wins" or "last wins" would let a tossed cookie choose the session.
        if self.name not in cookies or not sent_once(request, self.name):
            return None
        parts = []
        for name in self._names:
            value = cookies.get(name)
            if value is None:
                break
            parts.append(value)
        return "".join(parts) or None

    def write(self, request: web.Request, response: web.StreamResponse, value: str, *, max_age: int) -> None:
        """Set the value's chunks, and expire chunks the browser has beyond them."""
        chunks = [value[i : i + CHUNK_SIZE] for i in range(0, len(value), CHUNK_SIZE)]
        if len(chunks) > MAX_CHUNKS:
            raise ValueError(f"session of {len(value)} bytes does not fit in {MAX_CHUNKS} cookies")
        for name, chunk in zip(self._names, chunks, strict=False):
            self.attributes.set(response, name, chunk, max_age=max_age)
        self.clear(request, response, keep=len(chunks))

    def clear(self, request: web.Request, response: web.StreamResponse, *, keep: int = 0) -> None:
        for name in self._names[keep:]:
            if name in request_cookies(request):
                self.attributes.expire(response, name)
