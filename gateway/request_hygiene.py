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

from .errors import BadRequest

_HOST = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::([0-9]{1,5}))?")


@web.middleware
async def request_hygiene(request: web.Request, handler: Handler) -> web.StreamResponse:
    # SECURITY: only origin-form targets reach the rules and the proxy (absolute-form would pick the upstream).
    if not request.raw_path.startswith("/"):
        raise BadRequest("The request target must be a path on this site, not a URL.", code="invalid_target")
    hosts = request.headers.getall("Host", [])
    if len(hosts) > 1 or (not hosts and request.version >= (1, 1)):
        raise BadRequest("The request needs exactly one Host header.", code="invalid_host")
    # SECURITY: a Host with userinfo, spaces or several values reads differently to each server behind us.
    host = _HOST.fullmatch(hosts[0]) if hosts else None
    # A port beyond 65535 would make every later use of request.url or request.host raise (a 500).
    if hosts and (host is None or int(host.group(1) or 0) > 65535):
        raise BadRequest("The Host header is not a valid host name.", code="invalid_host")
    return await handler(request)
