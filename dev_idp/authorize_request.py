"""Validation of the authorize parameters, shared by ``/oauth2/authorize`` and the hosted-UI pages.

Cognito has two error channels and so does this module: when the client or the redirect URI cannot be trusted the
browser goes to the IdP's own ``/error`` page and never to the app (:class:`UntrustedRequest`); otherwise errors go
back to the app as ``{redirect_uri}?error=…&state=…`` (:class:`RedirectableError`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

from multidict import MultiMapping
from yarl import URL

from .directory import CODE_FLOW, Client, Directory

_KNOWN = (
    "client_id",
    "redirect_uri",
    "response_type",
    "state",
    "scope",
    "nonce",
    "code_challenge",
    "code_challenge_method",
)
# RFC 7636: an S256 challenge is the base64url SHA-256 of the verifier, 43 characters without padding.
_CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{43}$")


class UntrustedRequest(Exception):
    """The client or redirect URI is unknown: show the IdP's error page, never redirect."""

    def __init__(self, error: str, client_id: str | None) -> None:
        super().__init__(error)
        self.error = error
        self.client_id = client_id

    def location(self) -> str:
        query = {"error": self.error}
        if self.client_id:
            query["client_id"] = self.client_id
        return str(URL("/error").with_query(query))


class RedirectableError(Exception):
    def __init__(self, error: str, redirect_uri: str, state: str | None, description: str | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.redirect_uri = redirect_uri
        self.state = state
        self.description = description

    def location(self) -> str:
        query = {"error": self.error}
        if self.description:
            query["error_description"] = self.description
        if self.state is not None:
            query["state"] = self.state
        return str(URL(self.redirect_uri).update_query(query))


@dataclasses.dataclass(frozen=True)
class AuthorizeRequest:
    client: Client
    redirect_uri: str
    scopes: tuple[str, ...]
    state: str | None
    nonce: str | None
    code_challenge: str | None

    def success_location(self, code: str) -> str:
        query = {"code": code}
        if self.state is not None:
            query["state"] = self.state
        return str(URL(self.redirect_uri).update_query(query))


def _single(params: MultiMapping[str], name: str) -> str | None:
    values = params.getall(name, [])
    if len(values) > 1:
        raise ValueError(name)
    return values[0] if values else None


def parse_authorize_request(params: MultiMapping[str], directory: Directory) -> AuthorizeRequest:
    try:
        values: Mapping[str, str | None] = {name: _single(params, name) for name in _KNOWN}
    except ValueError:
        # A repeated client_id or redirect_uri cannot be trusted either.
        raise UntrustedRequest("invalid_request", None) from None
    client_id, redirect_uri = values["client_id"], values["redirect_uri"]
    if not client_id or not redirect_uri:
        raise UntrustedRequest("Required parameters missing", client_id)
    client = directory.clients.get(client_id)
    # SECURITY: exact match only (case, trailing slash, port): a prefix or pattern match is an open redirect.
    if client is None or redirect_uri not in client.callback_urls:
        raise UntrustedRequest("redirect_mismatch", client_id)

    state = values["state"]

    def fail(error: str, description: str | None = None) -> RedirectableError:
        return RedirectableError(error, redirect_uri, state, description)

    response_type = values["response_type"]
    # Implicit is never enabled here; a client_credentials client has no other flow, so no code either.
    if response_type == "token" or (response_type == "code" and CODE_FLOW not in client.allowed_oauth_flows):
        raise fail("unauthorized_client")
    if response_type != "code":
        raise fail("invalid_request" if response_type is None else "unsupported_response_type")

    scope = values["scope"]
    scopes = tuple(scope.split()) if scope else client.allowed_scopes
    if any(s not in client.allowed_scopes for s in scopes) or not scopes:
        raise fail("invalid_scope")
    if "openid" not in scopes and {"email", "profile", "phone"} & set(scopes):
        raise fail("invalid_scope")

    method, challenge = values["code_challenge_method"], values["code_challenge"]
    if method is not None or challenge is not None:
        if method != "S256":
            # Cognito supports S256 only; "plain" gives invalid_request.
            raise fail("invalid_request", "code_challenge_method must be S256")
        if challenge is None or not _CHALLENGE.match(challenge):
            raise fail("invalid_request", "code_challenge is missing or malformed")
    return AuthorizeRequest(client, redirect_uri, scopes, state, values["nonce"], challenge)
