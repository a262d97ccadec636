"""What the gateway knows about each request once it is answered: its id, its outcome, and how long it took.

``middleware(settings)`` is the outermost of create_app's list. It names the request (``request_id``), counts it
in flight, times it, and when it is answered records route, outcome, status class and duration (``metrics``),
plus, for the callback, a sign-in or a sign-in failure by reason. The outcome is set where the answer is decided:
``answers`` for every refusal and failure (``outcome_of``), the callback for a failed sign-in, the proxy when a
response breaks off; a request none of them marked was ``proxied`` (the proxy route) or answered by an
``endpoint`` of the gateway's own. ``stamp`` (``on_response_prepare``) puts X-Request-Id on every response,
streamed ones and error pages included. ``TimedUpstream`` times the upstream's part; ``access_fields`` is what
an access line says.

Outcomes: ``proxied``, ``redirected_to_sign_in``, ``unauthorized`` (401), ``forbidden`` (403), ``bad_request``
(400), ``sign_in_failed``, ``idp_unavailable`` and ``store_unavailable`` (503), ``upstream_unavailable`` (502),
``upstream_timeout`` (504), ``upstream_aborted`` (the upstream broke off mid-response), ``client_closed`` (the
client left before its answer was complete), ``http_error`` (404 for a path no upstream serves, 405, 413),
``error`` (an unexpected failure: 500) and ``endpoint``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from yarl import URL

from . import metrics, request_id
from .errors import (
    BadRequest,
    Forbidden,
    GatewayError,
    IdpUnavailable,
    InsufficientScope,
    InvalidBearer,
    NeedsSignIn,
    SignInFailed,
    StoreUnavailable,
    TokenRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from .identity import IDENTITY
from .request_id import REQUEST_ID
from .upstream_client import Response

if TYPE_CHECKING:
    from .config import Settings


@dataclasses.dataclass(frozen=True)
class Outcome:
    name: str
    reason: str | None = None  # the error code, for refusals and failures


PROXIED = Outcome("proxied")
ENDPOINT = Outcome("endpoint")
REDIRECTED_TO_SIGN_IN = Outcome("redirected_to_sign_in")
CLIENT_CLOSED = Outcome("client_closed", "client_closed")
UPSTREAM_ABORTED = Outcome("upstream_aborted", "upstream_aborted")
SERVER_ERROR = Outcome("error", "server_error")

OUTCOME = web.RequestKey("outcome", Outcome)
UPSTREAM_SECONDS = web.RequestKey("upstream_seconds", float)  # until the upstream's response head, or its failure
UPSTREAM_URL = web.RequestKey("upstream_url", URL)  # the URL an upstream answered (with a response head)
SENT_STATUS = web.RequestKey("sent_status", int)  # the status of the response whose head went out

# Most specific first: TokenRejected is a SignInFailed.
_ERROR_OUTCOMES: tuple[tuple[type[GatewayError], str], ...] = (
    (BadRequest, "bad_request"),
    (SignInFailed, "sign_in_failed"),
    (IdpUnavailable, "idp_unavailable"),
    (StoreUnavailable, "store_unavailable"),
    (UpstreamUnavailable, "upstream_unavailable"),
    (UpstreamTimeout, "upstream_timeout"),
)
# RFC 6749 5.2: what a token endpoint may answer. Its error string is the IdP's: any other becomes one reason, so
# that an IdP cannot grow a metric's label values without bound.
_TOKEN_ERRORS = frozenset(
    (
        "invalid_request",
        "invalid_client",
        "invalid_grant",
        "unauthorized_client",
        "unsupported_grant_type",
        "invalid_scope",
    )
)


def outcome_of(exc: BaseException, *, redirected: bool = False) -> Outcome:
    """The outcome of a request answered because of ``exc``; ``redirected``: a NeedsSignIn sent to sign in."""
    if isinstance(exc, NeedsSignIn):
        return REDIRECTED_TO_SIGN_IN if redirected else Outcome("unauthorized", exc.code)
    if isinstance(exc, InvalidBearer):
        return Outcome("unauthorized", exc.code)
    if isinstance(exc, Forbidden | InsufficientScope):
        return Outcome("forbidden", exc.code)
    if isinstance(exc, TokenRejected):
        return Outcome("sign_in_failed", exc.error if exc.error in _TOKEN_ERRORS else "token_rejected")
    if isinstance(exc, GatewayError):
        name = exc.outcome or next((name for kind, name in _ERROR_OUTCOMES if isinstance(exc, kind)), "error")
        return Outcome(name, exc.code)
    if isinstance(exc, web.HTTPException):
        return Outcome("http_error", f"http_{exc.status}")
    return SERVER_ERROR


def middleware(settings: Settings) -> Middleware:
    """The outermost middleware: the request's id, its in-flight count, its timing, and its record once answered.
    Without GATEWAY_METRICS_LISTEN nothing is recorded: metrics nobody can read cost nothing."""
    trusts, metered = settings.access.trusts, settings.observability.metrics_listen is not None

    @web.middleware
    async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        rid = request_id.choose(request.headers.getall(request_id.HEADER, []), trusted=trusts(request.remote))
        request[REQUEST_ID] = rid
        token = request_id.CURRENT.set(rid)
        if metered:
            metrics.request_started()
        status: int | None = None
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:  # raised past error_middleware (a redirect): aiohttp answers it
            status = exc.status
            raise
        except (ConnectionResetError, asyncio.CancelledError):
            if OUTCOME not in request:
                request[OUTCOME] = CLIENT_CLOSED
            status = request.get(SENT_STATUS)
            raise
        finally:
            request_id.CURRENT.reset(token)
            outcome = request[OUTCOME] = final_outcome(request)  # for the access line
            if metered:
                _record(request, outcome, status, time.perf_counter() - started)

    return observe


def final_outcome(request: web.Request) -> Outcome:
    """What answered the request: the outcome set where that was decided, else ``proxied`` or ``endpoint``."""
    return request.get(OUTCOME) or (PROXIED if request.match_info.route.name == "proxy" else ENDPOINT)


def _record(request: web.Request, outcome: Outcome, status: int | None, seconds: float) -> None:
    route = request.match_info.route.name or "none"
    metrics.request_finished(route, outcome.name, status, seconds)
    upstream = request.get(UPSTREAM_URL)
    if upstream is not None:  # labelled by origin: a configured upstream's, so bounded by the configuration
        metrics.upstream_answered(str(upstream.origin()), request[UPSTREAM_SECONDS])
    if route == "callback":
        # A callback answered without a failure started a session: its redirect, or the page that resumes a kept
        # form (200); every failure sets an outcome of its own.
        if outcome is ENDPOINT and status is not None and status < 400:
            metrics.signed_in()
        else:
            metrics.sign_in_failed(outcome.reason or outcome.name)


async def stamp(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: X-Request-Id on every response (an upstream's own is replaced), and its status."""
    rid = request.get(REQUEST_ID)
    if rid is not None:
        response.headers[request_id.HEADER] = rid
    request[SENT_STATUS] = response.status


class TimedUpstream:
    """Wraps the upstream request: the time until its response head (or its failure) is the upstream's part.
    A plain class, not a generator-based context manager: it is on every proxied request's path."""

    def __init__(self, request: web.Request, call: AbstractAsyncContextManager[Response]) -> None:
        self._request, self._call = request, call
        self._started = 0.0

    async def __aenter__(self) -> Response:
        self._started = time.perf_counter()
        try:
            response = await self._call.__aenter__()
        except BaseException:
            self._request[UPSTREAM_SECONDS] = time.perf_counter() - self._started  # refused, or a timeout
            raise
        self._request[UPSTREAM_SECONDS] = time.perf_counter() - self._started
        self._request[UPSTREAM_URL] = response.url
        return response

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        return await self._call.__aexit__(kind, exc, tb)


def response_broke_off(request: web.Request) -> None:
    """The proxy gives up on a response whose head was sent: because the client left, or the upstream broke off."""
    transport = request.transport
    request[OUTCOME] = CLIENT_CLOSED if transport is None or transport.is_closing() else UPSTREAM_ABORTED


def access_fields(request: web.BaseRequest, response: web.StreamResponse, seconds: float) -> dict[str, object]:
    """An access line's facts. SECURITY: the path without its query string (the callback's carries the code),
    still percent-encoded; the user's name, never a cookie, token or header value."""
    identity, outcome = request.get(IDENTITY), request.get(OUTCOME)
    upstream = request.get(UPSTREAM_SECONDS)
    return {
        "request_id": request.get(REQUEST_ID),
        "method": request.method,
        "path": request.rel_url.raw_path[:300],
        "status": response.status,
        "outcome": outcome.name if outcome else None,
        "reason": outcome.reason if outcome else None,
        "user": identity.name[:256] if identity else None,
        "duration_ms": round(seconds * 1000, 1),
        "upstream_ms": round(upstream * 1000, 1) if upstream is not None else None,
        "bytes": response.body_length,
        "peer": request.remote,
    }
