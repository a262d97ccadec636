"""The first check of every request: its target and its Host, before any rule, session or sign-in.

An absolute-form target (``GET https://other.example/admin HTTP/1.1``) or the asterisk form is refused: a proxy
that let it choose the upstream URL, or a sign-in that returned to it, would be steered by the client. A Host that
is missing (HTTP/1.1 requires it), repeated, or not a plain host[:port] (``@``, spaces, commas, slashes) is
refused too: the upstream, a cache, or a password-reset link built from it would each read it differently.
"""

from __future__ import annotations

import re

from aiohttp import web
from aiohttp.typedefs import Handler
from yarl import URL

from .errors import BadRequest

_HOST = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(?P<port>[0-9]{1,5}))?")


def _valid_host(host: str) -> bool:
    """A plain host[:port] that yarl can also read (``request.url`` is built from it)."""
    match = _HOST.fullmatch(host)
    if match is None:
        return False
    # SECURITY: a port above 65535, a bad IPv6 literal ("[:::]") or a bad IDNA label ("xn--zz") passes the pattern
    # but makes ``request.url`` raise: a 500 (with a traceback in the log) instead of this 400.
    port = match.group("port")
    if port is not None and int(port) > 65535:
        return False
    if "[" in host or "xn--" in host.lower():
        try:
            URL.build(scheme="http", authority=host).host  # noqa: B018 (the property decodes, and raises)
        except ValueError:  # UnicodeError included
            return False
    return True


@web.middleware
async def request_hygiene(request: web.Request, handler: Handler) -> web.StreamResponse:
    # SECURITY: only origin-form targets reach the rules and the proxy (absolute-form would pick the upstream).
    if not request.raw_path.startswith("/"):
        raise BadRequest("The request target must be a path on this site, not a URL.", code="invalid_target")
    hosts = request.headers.getall("Host", [])
    if len(hosts) > 1 or (not hosts and request.version >= (1, 1)):
        raise BadRequest("The request needs exactly one Host header.", code="invalid_host")
    # SECURITY: a Host with userinfo, spaces or several values reads differently to each server behind us.
    if hosts and not _valid_host(hosts[0]):
        raise BadRequest("The Host header is not a valid host name.", code="invalid_host")
    return await handler(request)
