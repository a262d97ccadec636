"""Who a request comes from, as the gateway verified it, and how claims become that identity.

An ``Identity`` is made once, at sign-in, refresh or Bearer-token verification, and is then only read: by the access
rules, by the identity headers, by ``/oauth2/userinfo``. A *machine* identity (an access token from the client
credentials grant: no user, ``sub`` is the client id) has no username, so nothing downstream can mistake it for a
person.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from aiohttp import web


@dataclasses.dataclass(frozen=True)
class ClaimNames:
    """Where identity comes from in the ID token or userinfo (GATEWAY_USER_CLAIM, _GROUPS_CLAIM, _EMAIL_CLAIM)."""

    user: tuple[str, ...] = ("cognito:username", "sub")
    groups: str = "cognito:groups"
    email: str = "email"

    def missing(self, claims: Mapping[str, Any], *, groups: bool) -> bool:
        """Whether the token lacks a claim userinfo may have (asked at sign-in and refresh, never per request).

        Cognito leaves ``cognito:groups`` out for a user in no group and its userInfo has no groups either, so
        for Cognito (``groups=False``) only the user and e-mail claims count.
        """
        wanted = [*self.user[:-1], self.email, *([self.groups] if groups else [])]
        return any(name not in claims for name in wanted)


@dataclasses.dataclass(frozen=True)
class Identity:
    sub: str
    username: str | None  # None for a machine client
    email: str | None = None
    email_verified: bool = False
    groups: tuple[str, ...] = ()
    preferred_username: str | None = None
    scopes: frozenset[str] = frozenset()  # OAuth scopes of the token that proves this identity
    client_id: str | None = None  # the OAuth client a Bearer token was issued to
    via: str = "session"  # "session" or "bearer"
    display_name: str | None = None  # the "name" claim, for Remote-Name / X-WEBAUTH-NAME
    # Kept only with GATEWAY_PASS_ACCESS_TOKEN: a credential, not part of who this is (no repr, no equality).
    access_token: str | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def is_machine(self) -> bool:
        return self.username is None

    @property
    def name(self) -> str:
        """For logs and pages: the username, or the client id of a machine."""
        return self.username or f"client {self.client_id or self.sub}"

    @property
    def email_domain(self) -> str | None:
        email = self.verified_email
        if email is None or "@" not in email:
            return None
        return email.rsplit("@", 1)[1].lower()

    @property
    def verified_email(self) -> str | None:
        return self.email if self.email and self.email_verified else None


# Set by the identity middleware on every request: the verified identity, or None for an anonymous request on a
# public path. Handlers read it; nothing else decides who the user is.
IDENTITY = web.RequestKey[Identity | None]("identity")


def _clean(text: str) -> str:
    """A claim as well-formed Unicode: a lone surrogate (JSON allows ``\\udc80``) becomes U+FFFD, so that every
    encoder downstream (headers, pages, JSON, logs) can write it."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace") if not text.isascii() else text


def _text(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    return _clean(str(value)) or None


def _groups(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (_clean(value),)
    if isinstance(value, list | tuple):
        return tuple(_clean(g) for g in value if isinstance(g, str))
    return ()


def _verified(value: Any) -> bool:
    # Cognito's ID token has a boolean; its userInfo and some providers give the string "true".
    return value is True or (isinstance(value, str) and value.lower() == "true")


def user_from_claims(claims: Mapping[str, Any], names: ClaimNames) -> Identity:
    """A person's identity from ID-token claims (merged with userinfo where the token lacked some)."""
    sub = _clean(str(claims["sub"]))
    username = next((_text(claims.get(name)) for name in names.user if _text(claims.get(name))), None) or sub
    email = _text(claims.get(names.email))
    return Identity(
        sub=sub,
        username=username,
        email=email,
        # As oauth2-proxy: an e-mail is refused only when the provider says it is unverified.
        email_verified=_verified(claims.get("email_verified", True)),
        groups=_groups(claims.get(names.groups)),
        preferred_username=_text(claims.get("preferred_username")),
        display_name=_text(claims.get("name")),
    )


def from_access_token(claims: Mapping[str, Any], names: ClaimNames) -> Identity:
    """A Cognito access token's identity: a user's (it has ``username``) or a machine's (client credentials)."""
    scopes = frozenset(str(claims.get("scope") or "").split())
    client_id = str(claims["client_id"])
    username = _text(claims.get("username"))
    if username is None:
        # SECURITY: a client-credentials token is never a user: no username, so no X-Forwarded-User.
        return Identity(sub=str(claims["sub"]), username=None, scopes=scopes, client_id=client_id, via="bearer")
    return Identity(
        sub=str(claims["sub"]),
        username=username,
        groups=_groups(claims.get(names.groups)),
        scopes=scopes,
        client_id=client_id,
        via="bearer",
    )
