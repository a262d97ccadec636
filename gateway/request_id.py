"""The request id: one name for a request in the gateway's log, the upstream's log and the client's bug report.

``X-Request-Id`` from a front proxy in GATEWAY_TRUSTED_PROXIES is kept, so that one id follows the request through
every hop; from anyone else, or when it is not a short printable token, a new one (128 random bits, 32 hex digits) replaces
it. The id goes upstream, back to the client on every response, and into the access line and every log line
written while the request is handled (``CURRENT``, read by ``logs``).
"""

from __future__ import annotations

import contextvars
import re
import secrets

from aiohttp import web

HEADER = "X-Request-Id"
MAX_LENGTH = 128
# Visible ASCII only (no space, no control character): the id can split no header and no log line.
_TOKEN = re.compile(rf"[\x21-\x7e]{{1,{MAX_LENGTH}}}")

REQUEST_ID = web.RequestKey("request_id", str)
# The id of the request being handled, for log lines written on its behalf; None outside a request.
CURRENT: contextvars.ContextVar[str | None] = contextvars.ContextVar("gateway_request_id", default=None)


def new() -> str:
    """32 hex digits of ``secrets``: as unique as a uuid4's, without building a UUID object on every request."""
    return secrets.token_hex(16)


def choose(sent: list[str], *, trusted: bool) -> str:
    """The id this request is known by: the one a trusted hop sent (once), if it is a short printable token; else
    a new one."""
    # SECURITY: an id from an untrusted client would let it choose what the upstream and our log call its
    # request (to blend into or forge another request's trail); a bad one could split a line downstream.
    if trusted and len(sent) == 1 and _TOKEN.fullmatch(sent[0]):
        return sent[0]
    return new()
