"""The gateway's exceptions. Handlers raise them; ``middleware.error_middleware`` turns each into one answer.

GatewayError
├── BadRequest            400: the request itself is wrong (a bad rd, a broken callback)
├── SignInFailed          400/401: the IdP or its tokens refused this sign-in
├── IdpUnavailable        503: discovery, JWKS or the token endpoint cannot be reached
├── UpstreamUnavailable   502: the upstream refused the connection or broke it
└── UpstreamTimeout       504: the upstream did not answer in time
"""

from __future__ import annotations


class GatewayError(Exception):
    status = 500
    title = "Something went wrong"

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


class IdpUnavailable(GatewayError):
    status = 503
    title = "Sign-in is unavailable"

    def __init__(self, message: str = "The identity provider cannot be reached. Try again in a moment.") -> None:
        super().__init__(message, code="idp_unavailable")


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


class InvalidToken(Exception):
    """A token failed verification; the message says why (for the log, never for the client)."""


class StoreUnavailable(GatewayError):
    status = 503
    title = "Sessions are unavailable"

    def __init__(self, message: str = "The session store cannot be reached. Try again in a moment.") -> None:
        super().__init__(message, code="session_store_unavailable")
