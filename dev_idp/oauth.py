"""The OAuth 2.0 / OIDC endpoints: discovery, JWKS, authorize, token, userInfo, revoke and logout.

The token endpoint answers the grants a client's ``allowed_oauth_flows`` enable: ``authorization_code`` and
``refresh_token`` for the code flow, ``client_credentials`` for a machine client (resource-server scopes only).

Errors follow Cognito: the token and revoke endpoints answer ``{"error": "<code>"}`` with status 400 (401 for
``invalid_client`` on revoke), userInfo answers with ``WWW-Authenticate``, and logout shows the IdP's error page.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

import jwt
from aiohttp import web
from werkzeug.datastructures import Authorization
from yarl import URL

from .authorize_request import RedirectableError, UntrustedRequest, parse_authorize_request
from .directory import CLIENT_CREDENTIALS, CODE_FLOW, CONFIRMED, Client
from .forms import read_form
from .hosted_ui import issue_code
from .pool import HOSTED_UI_COOKIE, POOL, Pool, log, redirect
from .tokens import TokenSet, opaque_refresh_token, releases_every_attribute

_JSON = "application/json;charset=UTF-8"
_VERIFIER_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _json(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    response = web.Response(body=json.dumps(body, sort_keys=True).encode(), status=status, headers=headers)
    response.headers["Content-Type"] = _JSON
    response.headers["Cache-Control"] = "no-store"
    return response


class OAuthError(Exception):
    """An error for the token and revoke endpoints: Cognito's JSON body and status."""

    def __init__(self, error: str, status: int = 400) -> None:
        super().__init__(error)
        self.error = error
        self.status = status

    def response(self) -> web.Response:
        return _json({"error": self.error}, self.status)


# Discovery ----------------------------------------------------------------------------------------------------
async def discovery(request: web.Request) -> web.Response:
    pool = request.app[POOL]
    if request.match_info["pool_id"] != pool.directory.pool_id:
        raise web.HTTPNotFound()
    domain = pool.public_url
    document = {
        "authorization_endpoint": f"{domain}/oauth2/authorize",
        "end_session_endpoint": f"{domain}/logout",
        "id_token_signing_alg_values_supported": ["RS256"],
        "issuer": pool.issuer,
        "jwks_uri": f"{pool.issuer}/.well-known/jwks.json",
        "response_types_supported": ["code", "token"],
        "revocation_endpoint": f"{domain}/oauth2/revoke",
        "scopes_supported": ["openid", "email", "phone", "profile"],
        "subject_types_supported": ["public"],
        "token_endpoint": f"{domain}/oauth2/token",
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "userinfo_endpoint": f"{domain}/oauth2/userInfo",
    }
    return web.json_response(document, dumps=lambda o: json.dumps(o, sort_keys=True))


async def jwks(request: web.Request) -> web.Response:
    pool = request.app[POOL]
    if request.match_info["pool_id"] != pool.directory.pool_id:
        raise web.HTTPNotFound()
    return web.json_response(pool.keys.jwks())


# Authorize ----------------------------------------------------------------------------------------------------
async def authorize(request: web.Request) -> web.Response:
    pool = request.app[POOL]
    try:
        auth = parse_authorize_request(request.query, pool.directory)
    except (UntrustedRequest, RedirectableError) as exc:
        raise web.HTTPFound(exc.location()) from None
    username = pool.grants.session_user(request.cookies.get(HOSTED_UI_COOKIE))
    user = pool.directory.users.get(username) if username else None
    if user is not None and user.enabled and user.status == CONFIRMED:
        # The hosted-UI session is still valid: Cognito issues a new code without showing the form.
        raise web.HTTPFound(issue_code(pool, auth, user))
    raise web.HTTPFound(str(URL("/login").with_query(request.query)))


# Token --------------------------------------------------------------------------------------------------------
async def _form(request: web.Request) -> dict[str, str]:
    fields = await read_form(request)
    if fields is None:
        raise OAuthError("invalid_request")  # not a form, not UTF-8, or a repeated parameter
    return fields


def authenticate_client(request: web.Request, fields: dict[str, str], pool: Pool) -> Client:
    """``client_secret_basic``, ``client_secret_post`` or a public client's bare ``client_id``."""
    header = request.headers.get("Authorization")
    basic: Authorization | None = None
    if header is not None:
        basic = Authorization.from_header(header)
        if basic is None or basic.type != "basic" or basic.username is None:
            raise OAuthError("invalid_client")
    if basic is not None and "client_secret" in fields:
        raise OAuthError("invalid_request")  # RFC 6749 2.3: one authentication method per request
    client_id = basic.username if basic is not None else fields.get("client_id")
    if basic is not None and fields.get("client_id", client_id) != client_id:
        raise OAuthError("invalid_client")
    secret = basic.password if basic is not None else fields.get("client_secret")
    client = pool.directory.clients.get(client_id or "")
    if client is None:
        raise OAuthError("invalid_client")
    if client.is_public:
        if secret:
            raise OAuthError("invalid_client")
        return client
    # SECURITY: constant-time comparison, so the secret cannot be guessed byte by byte from response times.
    if not secret or not hmac.compare_digest(client.client_secret.encode(), secret.encode()):
        raise OAuthError("invalid_client")
    return client


def _pkce_ok(challenge: str, verifier: str | None) -> bool:
    if verifier is None or not 43 <= len(verifier) <= 128 or not set(verifier) <= _VERIFIER_CHARS:
        return False
    computed = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return hmac.compare_digest(computed, challenge)


async def token(request: web.Request) -> web.Response:
    pool = request.app[POOL]
    try:
        fields = await _form(request)
        client = authenticate_client(request, fields, pool)
        grant_type = fields.get("grant_type")
        if grant_type is None:
            raise OAuthError("invalid_request")
        if grant_type not in _GRANTS:
            raise OAuthError("unsupported_grant_type")
        flow, handler = _GRANTS[grant_type]
        if flow not in client.allowed_oauth_flows:
            raise OAuthError("unauthorized_client")
        pool.grants.token_requests[grant_type] = pool.grants.token_requests.get(grant_type, 0) + 1
        return handler(pool, client, fields)
    except OAuthError as exc:
        log.info("token endpoint: %s", exc.error)
        return exc.response()


def _token_response(tokens: TokenSet, refresh_token: str | None = None) -> web.Response:
    """Cognito's token response: no ``scope`` field, and ``id_token`` only when ``openid`` was granted."""
    body: dict[str, Any] = {
        "access_token": tokens.access_token,
        "expires_in": tokens.expires_in,
        "token_type": "Bearer",
    }
    if refresh_token is not None:
        body["refresh_token"] = refresh_token
    if tokens.id_token is not None:
        body["id_token"] = tokens.id_token
    return _json(body)


def _exchange_code(pool: Pool, client: Client, fields: dict[str, str]) -> web.Response:
    code, redirect_uri = fields.get("code"), fields.get("redirect_uri")
    if not code or not redirect_uri:
        raise OAuthError("invalid_request")
    pending = pool.grants.redeem_code(code)
    if pending is None or pending.grant.client_id != client.client_id or pending.redirect_uri != redirect_uri:
        raise OAuthError("invalid_grant")
    if pending.code_challenge is not None and not _pkce_ok(pending.code_challenge, fields.get("code_verifier")):
        raise OAuthError("invalid_grant")
    user = pool.directory.users.get(pending.grant.username)
    if user is None or not user.enabled or user.status != CONFIRMED:
        raise OAuthError("invalid_grant")
    tokens = pool.minter.mint(pending.grant, user, client, nonce=pending.nonce)
    refresh_token = opaque_refresh_token()
    pool.grants.add_refresh_token(refresh_token, pending.grant, client.refresh_token_validity)
    return _token_response(tokens, refresh_token)


def _refresh(pool: Pool, client: Client, fields: dict[str, str]) -> web.Response:
    refresh_token = fields.get("refresh_token")
    if not refresh_token:
        raise OAuthError("invalid_request")
    record = pool.grants.find_refresh_token(refresh_token)
    if record is None or record.grant.client_id != client.client_id:
        raise OAuthError("invalid_grant")
    user = pool.directory.users.get(record.grant.username)
    if user is None or not user.enabled:
        raise OAuthError("invalid_grant")
    tokens = pool.minter.mint(record.grant, user, client, nonce=None)
    # Cognito returns no new refresh token on refresh (without rotation): the client keeps the old one.
    return _token_response(tokens)


def _client_credentials(pool: Pool, client: Client, fields: dict[str, str]) -> web.Response:
    """Machine to machine: an access token for the client itself, carrying resource-server scopes only.

    Cognito's rules: the scope parameter may name only the client's allowed custom scopes (``openid`` and the other
    standard scopes are ``invalid_scope`` here, as there is no user); without it the token has all of them.
    """
    allowed = [scope for scope in client.allowed_scopes if scope in pool.directory.custom_scopes]
    scopes = tuple(dict.fromkeys(fields.get("scope", "").split())) or tuple(allowed)
    if any(scope not in allowed for scope in scopes):
        raise OAuthError("invalid_scope")
    tokens = pool.minter.mint_for_client(client, scopes)
    log.info("client_credentials token for %s: %s", client.client_id, " ".join(scopes))
    return _token_response(tokens)


# Each grant type, the AllowedOAuthFlows entry a client needs for it, and what answers it.
_GRANTS: dict[str, tuple[str, Callable[[Pool, Client, dict[str, str]], web.Response]]] = {
    "authorization_code": (CODE_FLOW, _exchange_code),
    "refresh_token": (CODE_FLOW, _refresh),
    "client_credentials": (CLIENT_CREDENTIALS, _client_credentials),
}


# userInfo -----------------------------------------------------------------------------------------------------
def _userinfo_error(status: int, error: str, description: str) -> web.Response:
    challenge = f'Bearer error="{error}", error_description="{description}"'
    return _json({"error": error, "error_description": description}, status, {"WWW-Authenticate": challenge})


async def userinfo(request: web.Request) -> web.Response:
    pool = request.app[POOL]
    scheme, _, access_token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not access_token.strip():
        return _userinfo_error(400, "invalid_request", "Bad OAuth2 request at UserInfo Endpoint")
    try:
        claims = pool.minter.decode_access_token(access_token.strip())
    except jwt.PyJWTError:
        claims = None
    # A client_credentials token names no user: it must not match one called "None".
    username = claims.get("username") if claims else None
    user = pool.directory.users.get(username) if isinstance(username, str) else None
    if (
        claims is None
        or user is None
        or not user.enabled
        or claims.get("origin_jti") in pool.grants.revoked_origin_jtis
    ):
        return _userinfo_error(
            401,
            "invalid_token",
            "Access token is expired, disabled, or deleted, or the user has globally signed out.",
        )
    scopes = str(claims.get("scope", "")).split()
    if "openid" not in scopes:
        return _userinfo_error(401, "invalid_token", "Access token does not contain openid scope")
    # Cognito returns every attribute as a string, booleans included ("true"), unlike the ID token.
    body: dict[str, str] = {"sub": user.sub, "username": user.username}
    everything = releases_every_attribute(scopes)
    if "email" in scopes or everything:
        body |= {"email": user.email, "email_verified": "true" if user.email_verified else "false"}
    if "profile" in scopes or everything:
        body |= user.attributes
    return _json(body)


# Revoke -------------------------------------------------------------------------------------------------------
async def revoke(request: web.Request) -> web.Response:
    pool = request.app[POOL]
    try:
        fields = await _form(request)
        try:
            client = authenticate_client(request, fields, pool)
        except OAuthError as exc:
            if exc.error == "invalid_client":
                raise OAuthError("invalid_client", 401) from None
            raise
        token_value = fields.get("token")
        if not token_value:
            raise OAuthError("invalid_request")
        if token_value.count(".") == 2:
            # A JWT: an access or ID token. Cognito revokes refresh tokens only.
            raise OAuthError("unsupported_token_type")
    except OAuthError as exc:
        return exc.response()
    pool.grants.revoke_refresh_token(token_value, client.client_id)
    # Cognito answers 200 with an empty body, also for a token it does not know.
    return web.Response(status=200)


# Logout -------------------------------------------------------------------------------------------------------
async def logout(request: web.Request) -> web.Response:
    pool = request.app[POOL]
    query = request.query
    client_id = query.get("client_id")
    client = pool.directory.clients.get(client_id or "")
    if client is None:
        raise web.HTTPFound(str(URL("/error").with_query(error="Required parameters missing")))
    logout_uri, redirect_uri = query.get("logout_uri"), query.get("redirect_uri")
    if logout_uri is not None and logout_uri in client.logout_urls:
        response = redirect(logout_uri)
    elif redirect_uri is not None and redirect_uri in client.callback_urls and query.get("response_type"):
        # Sign out, then straight to the sign-in page with the same parameters.
        response = redirect(str(URL("/login").with_query(query)))
    else:
        # An unregistered logout_uri falls through to the redirect path, and with no valid redirect_uri either
        # Cognito shows its error page.
        raise web.HTTPFound(
            str(URL("/error").with_query(error="Required parameters missing", client_id=client.client_id))
        )
    pool.grants.end_session(request.cookies.get(HOSTED_UI_COOKIE))
    response.del_cookie(HOSTED_UI_COOKIE, path="/")
    return response
