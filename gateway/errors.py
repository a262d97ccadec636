"""The gateway's exceptions. Handlers and middlewares raise them; ``answers.error_middleware`` turns each into one
answer, so no handler builds an error response by hand.

GatewayError
├── BadRequest            400: the request itself is wrong (a bad rd, a broken callback, an ambiguous path)
├── SignInFailed          400/401: the IdP or its tokens refused this sign-in
│   └── TokenRejected     the token endpoint answered with an OAuth error (invalid_grant, …)
├── IdpUnavailable        503: discovery, JWKS or the token endpoint cannot be reached
├── StoreUnavailable      503: the session store (Redis) cannot be reached
├── UpstreamUnavailable   502: the upstream refused the connection or broke it
├── UpstreamTimeout       504: the upstream did not answer in time
└── AccessOutcome         the access decision of the identity middleware
    ├── NeedsSignIn       no identity: 302 to sign in for navigations, 401 JSON with WWW-Authenticate otherwise
    ├── InvalidBearer     401 with WWW-Authenticate: Bearer error="invalid_token" (RFC 6750 3.1)
    ├── Forbidden         403: signed in, but the path's rule refuses this identity
    └── InsufficientScope 403 with WWW-Authenticate: Bearer error="insufficient_scope"

InvalidToken and RefreshBusy are internal signals, never answers: a token failed verification (the message says why,
for the log), or another replica held the refresh lock too long.
"""

from __future__ import annotations


class GatewayError(Exception):
    status = 500
    title = "Something went wrong"
    # The ``outcome`` label of gateway_requests_total, for an error whose class observe.py does not know (one
    # defined beside the code that raises it); None: "error".
    outcome: str | None = None

    def __init__(self, message: str, *, code: str = "server_error") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class BadRequest(GatewayError):
    status = 400
    title = "Bad request"

    def __init__(self, message: str, *, code: str = "bad_request") -> None:
        super().__init__(message, code=code)


class SignInFailed(GatewayError):
    status = 400
    title = "Sign-in failed"

    def __init__(self, message: str, *, code: str = "sign_in_failed", status: int = 400) -> None:
        super().__init__(message, code=code)
        self.status = status


class TokenRejected(SignInFailed):
    """The token endpoint answered with an OAuth error (``invalid_grant``, ``invalid_client``, …)."""

    def __init__(self, error: str) -> None:
        super().__init__("The identity provider refused this sign-in. Please sign in again.", code=error)
        self.error = error


class IdpUnavailable(GatewayError):
    status = 503
    title = "Sign-in is unavailable"

    def __init__(self, message: str = "The identity provider cannot be reached. Try again in a moment.") -> None:
        super().__init__(message, code="idp_unavailable")


class StoreUnavailable(GatewayError):
    status = 503
    title = "Sessions are unavailable"

    def __init__(self, message: str = "The session store cannot be reached. Try again in a moment.") -> None:
        super().__init__(message, code="session_store_unavailable")


class UpstreamUnavailable(GatewayError):
    status = 502
    title = "Bad gateway"

    def __init__(self, message: str = "The application behind this gateway is not reachable right now.") -> None:
        super().__init__(message, code="upstream_unavailable")


class UpstreamTimeout(GatewayError):
    status = 504
    title = "Gateway timeout"

    def __init__(self, message: str = "The application behind this gateway did not answer in time.") -> None:
        super().__init__(message, code="upstream_timeout")


class AccessOutcome(GatewayError):
    """An access decision other than "go on"; ``answers`` maps each kind to its answer."""


class NeedsSignIn(AccessOutcome):
    status = 401
    title = "Sign-in required"

    def __init__(self, *, redirect: bool = True) -> None:
        """``redirect=False``: always a 401, never a redirect (forward-auth: nginx accepts only 2xx, 401, 403)."""
        super().__init__("Sign-in required.", code="unauthorized")
        self.redirect = redirect


class InvalidBearer(AccessOutcome):
    status = 401
    title = "Invalid token"

    def __init__(self, message: str = "The bearer token is not valid here.") -> None:
        super().__init__(message, code="invalid_token")


class Forbidden(AccessOutcome):
    status = 403
    title = "Access denied"

    def __init__(self, message: str = "You are signed in, but this page is not open to you.") -> None:
        super().__init__(message, code="forbidden")


class InsufficientScope(AccessOutcome):
    status = 403
    title = "Insufficient scope"

    def __init__(self, scopes: frozenset[str]) -> None:
        super().__init__("The token lacks a scope this path needs.", code="insufficient_scope")
        self.scopes = scopes


class InvalidToken(Exception):
    """A token failed verification; the message says why (for the log, never for the client)."""


class RefreshBusy(Exception):
    """Another replica held the refresh lock for too long."""
