"""Token minting in Cognito's shapes (claims, header, serialisation, sizes)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import jwt

from .directory import Client, User
from .keys import PoolKeys, SigningKey

_JWE_HEADER = base64.urlsafe_b64encode(b'{"cty":"JWT","enc":"A256GCM","alg":"RSA-OAEP"}').rstrip(b"=").decode()


class CognitoJSONEncoder(json.JSONEncoder):
    """Serialises like Cognito's Java serialiser, which escapes ``/`` as ``\\/`` in JWT headers and payloads."""

    def encode(self, o: Any) -> str:
        # "/" only ever occurs inside JSON strings, so the replacement cannot touch the syntax.
        return super().encode(o).replace("/", "\\/")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def at_hash(access_token: str) -> str:
    """OIDC ``at_hash``: the left half of the SHA-256 of the access token, base64url."""
    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    return _b64url(digest[: len(digest) // 2])


def opaque_refresh_token() -> str:
    """A refresh token shaped like Cognito's: a five-part compact JWE of about 1,750 characters.

    Its content is random: only dev_idp reads it, by looking it up. The length matters, because it is what makes
    a session cookie overflow 4 KB against real Cognito.
    """
    parts = [_JWE_HEADER, _b64url(secrets.token_bytes(256)), _b64url(secrets.token_bytes(12))]
    parts += [_b64url(secrets.token_bytes(980)), _b64url(secrets.token_bytes(16))]
    return ".".join(parts)


def releases_every_attribute(scopes: Sequence[str]) -> bool:
    """Cognito: ``openid`` without ``email``, ``phone`` or ``profile`` releases every attribute.

    Resource-server scopes such as ``reports/read`` say nothing about attributes, so they do not narrow it.
    """
    return "openid" in scopes and not {"email", "phone", "profile"} & set(scopes)


@dataclasses.dataclass(frozen=True)
class Grant:
    """What a code or refresh token was issued for: the facts that every token minted from it repeats."""

    username: str
    client_id: str
    scopes: tuple[str, ...]
    auth_time: int
    origin_jti: str


@dataclasses.dataclass(frozen=True)
class TokenSet:
    id_token: str | None
    access_token: str
    expires_in: int


class TokenMinter:
    def __init__(self, *, keys: PoolKeys, issuer: str, clock: Callable[[], float] = time.time) -> None:
        self._keys = keys
        self._issuer = issuer
        self._clock = clock

    def mint(self, grant: Grant, user: User, client: Client, *, nonce: str | None) -> TokenSet:
        now = int(self._clock())
        event_id = str(uuid.uuid4())
        access_claims: dict[str, Any] = {
            "sub": user.sub,
            **({"cognito:groups": list(user.groups)} if user.groups else {}),
            "iss": self._issuer,
            "version": 2,
            "client_id": client.client_id,
            "origin_jti": grant.origin_jti,
            "event_id": event_id,
            "token_use": "access",
            "scope": " ".join(grant.scopes),
            "auth_time": grant.auth_time,
            "exp": now + client.access_token_validity,
            "iat": now,
            "jti": str(uuid.uuid4()),
            "username": user.username,
        }
        access_token = self._sign(access_claims, self._keys.access_token)
        id_token = None
        # Either every attribute (openid alone) or those that email and profile each release.
        everything = releases_every_attribute(grant.scopes)
        with_email = everything or "email" in grant.scopes
        with_profile = everything or "profile" in grant.scopes
        if "openid" in grant.scopes:
            id_claims: dict[str, Any] = {
                "at_hash": at_hash(access_token),
                "sub": user.sub,
                **({"cognito:groups": list(user.groups)} if user.groups else {}),
            }
            if with_email:
                id_claims["email_verified"] = user.email_verified
            id_claims |= {
                "iss": self._issuer,
                "cognito:username": user.username,
                **({"nonce": nonce} if nonce is not None else {}),
                "origin_jti": grant.origin_jti,
                "aud": client.client_id,
                "event_id": event_id,
                "token_use": "id",
                "auth_time": grant.auth_time,
            }
            if with_profile:
                id_claims |= user.attributes
            id_claims |= {"exp": now + client.id_token_validity, "iat": now, "jti": str(uuid.uuid4())}
            if with_email:
                id_claims["email"] = user.email
            id_token = self._sign(id_claims, self._keys.id_token)
        return TokenSet(id_token=id_token, access_token=access_token, expires_in=client.access_token_validity)

    def mint_for_client(self, client: Client, scopes: Sequence[str]) -> TokenSet:
        """A client_credentials access token: the client acts as itself, so ``sub`` is its id and no user is named.

        The claims and their order are those of Cognito's machine-to-machine tokens: no ``username``, no groups,
        no ``origin_jti`` or ``event_id`` (there is no sign-in session to revoke it through).
        """
        now = int(self._clock())
        claims: dict[str, Any] = {
            "sub": client.client_id,
            "token_use": "access",
            "scope": " ".join(scopes),
            "auth_time": now,
            "iss": self._issuer,
            "exp": now + client.access_token_validity,
            "iat": now,
            "version": 2,
            "jti": str(uuid.uuid4()),
            "client_id": client.client_id,
        }
        access_token = self._sign(claims, self._keys.access_token)
        return TokenSet(id_token=None, access_token=access_token, expires_in=client.access_token_validity)

    @staticmethod
    def _sign(claims: dict[str, Any], key: SigningKey) -> str:
        # Cognito's header is {"kid", "alg"} with no "typ"; PyJWT drops "typ" when it is set to None.
        return jwt.encode(
            claims,
            key.private_key,
            algorithm="RS256",
            headers={"kid": key.kid, "typ": None},
            json_encoder=CognitoJSONEncoder,
        )

    def decode_access_token(self, token: str) -> dict[str, Any]:
        """Verify one of our own access tokens (for userInfo); raises ``jwt.PyJWTError`` when it is not one."""
        public_key = self._keys.access_token.private_key.public_key()
        claims: dict[str, Any] = jwt.decode(
            token,
            public_key,
            algorithms=["RS256"],
            issuer=self._issuer,
            options={"require": ["exp", "iat", "token_use", "client_id"], "verify_aud": False},
        )
        if claims.get("token_use") != "access":
            raise jwt.InvalidTokenError("not an access token")
        return claims
