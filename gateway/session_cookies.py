"""The one place that knows the gateway's cookies: their names, their attributes, and how a value is chunked.

A Cognito refresh token alone is about 1.75 KB, so an encrypted session approaches a browser's 4 KB cookie limit;
the value is split across numbered cookies (``name``, ``name_1``, ``name_2``…) when it must be, and every
``Set-Cookie`` stays under 4 KB. Login-state cookies (``name_login_…``) share the attributes, except SameSite,
which must let the IdP's cross-site redirect back to the callback carry them.

Cookies are read with aiohttp's parser (``request.cookies``) and written with ``response.set_cookie``. The
aiohttp-session storages are not used: they hold one Fernet key (no rotation), write one cookie (no chunks) and
skip streamed responses, which are the three things this gateway needs.
"""

from __future__ import annotations

import dataclasses

from aiohttp import web

from .config import SessionSettings

CHUNK_SIZE = 3800  # value bytes per cookie: with name and attributes, each Set-Cookie stays under 4096
MAX_CHUNKS = 4
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

    def set(self, response: web.StreamResponse, name: str, value: str, *, max_age: int) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path="/",
            domain=self.domain,
            secure=self.secure,
            httponly=True,
            samesite=self.samesite,
        )

    def expire(self, response: web.StreamResponse, name: str) -> None:
        response.set_cookie(
            name,
            "",
            max_age=0,
            expires=_EPOCH,
            path="/",
            domain=self.domain,
            secure=self.secure,
            httponly=True,
            samesite=self.samesite,
        )


def is_gateway_cookie(name: str, prefix: str) -> bool:
    """Whether a cookie belongs to the gateway (session chunks and login state), so it never goes upstream."""
    return name == prefix or name.startswith(prefix + "_")


class SessionCookies:
    """The session cookie's value, whole, however many numbered cookies carry it."""

    def __init__(self, settings: SessionSettings) -> None:
        self.name = settings.cookie_name
        self.attributes = CookieAttributes.for_session(settings)
        self._names = [self.name if i == 0 else f"{self.name}_{i}" for i in range(MAX_CHUNKS)]

    def read(self, request: web.Request) -> str | None:
        cookies = request.cookies
        if self.name not in cookies:
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
            if name in request.cookies:
                self.attributes.expire(response, name)
