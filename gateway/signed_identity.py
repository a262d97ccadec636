"""``x-amzn-oidc-data``: the identity as an AWS ALB signs it, so apps written for an ALB verify it unchanged.

The format is the ALB user guide's ("User claims encoding and signature verification"), with the fields
aws-jwt-verify's ``AlbJwtVerifier`` checks: a compact JWS signed with ES256 (P-256, the 64-byte R||S signature)
whose JOSE header carries ``alg``, ``kid`` (a UUID), ``signer`` (the ALB ARN, GATEWAY_SIGNER_ARN), ``iss``,
``client`` (the client id) and ``exp``, and whose payload carries the user's claims, again with ``exp`` and ``iss``
(aws-jwt-verify reads those two from the payload, ``signer`` and ``client`` from the header).

The encoding avoids ALB's padding quirk: an ALB pads its segments with ``=``, which strict JWS parsers refuse, and
stripping it breaks the signature. Here no segment is padded, and the header and payload are serialised so that
their base64url text is also valid standard base64: AWS's own Python example reads the header with
``base64.b64decode``, which would silently drop ``-`` and ``_`` and fail on a length that is not a multiple of 4.
For ASCII JSON a ``-`` or ``_`` only comes from one of ``> ? ~ DEL``, so those are written as ``\\u`` escapes, and
the JSON is padded with spaces to a multiple of three bytes. Every JSON parser reads the same claims.

Cost: signing takes tens of microseconds; ``HeaderPolicy`` keeps one token per identity and asks for a new one only
shortly before it expires, so a request costs a cache lookup.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from .identity import Identity
from .signing_keys import SigningKeys

LIFETIME = 120  # seconds a signed header is valid: about as long as an ALB's
RENEW_BEFORE = 30  # a cached header is replaced when fewer seconds than this remain
# Characters that would make base64url differ from standard base64 (see the module docstring), as JSON escapes.
_UNSAFE = str.maketrans({">": "\\u003e", "?": "\\u003f", "~": "\\u007e", "\x7f": "\\u007f"})


def base64_safe_json(value: dict[str, Any]) -> bytes:
    """JSON whose base64url encoding has no ``-``, ``_`` or padding, so it decodes as standard base64 too."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=True).translate(_UNSAFE)
    return (text + " " * (-len(text) % 3)).encode("ascii")


def _segment(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


class IdentitySigner:
    """Signs an identity's ``x-amzn-oidc-data``; stateless (``HeaderPolicy`` caches what it returns)."""

    def __init__(
        self,
        keys: SigningKeys,
        *,
        signer_arn: str,
        issuer: str,
        client_id: str,
        groups_claim: str = "cognito:groups",
        lifetime: int = LIFETIME,
    ) -> None:
        self.keys = keys
        self._key = keys.current
        self._header = {
            "typ": "JWT",
            "alg": "ES256",
            "kid": self._key.kid,
            "signer": signer_arn,
            "iss": issuer,
            "client": client_id,
        }
        self._issuer = issuer
        self._groups_claim = groups_claim
        self.lifetime = lifetime

    def claims(self, identity: Identity) -> dict[str, Any]:
        """The payload, shaped like the Cognito userInfo claims an ALB passes on (strings, ``username``)."""
        claims: dict[str, Any] = {"sub": identity.sub, "username": identity.username}
        if identity.email and identity.email_verified:
            # SECURITY: an unverified address is left out, as from X-Forwarded-Email: userInfo's "false" is a
            # non-empty string, which a careless ``if claims["email_verified"]`` would take for true.
            claims |= {"email": identity.email, "email_verified": "true"}
        if identity.display_name:
            claims["name"] = identity.display_name
        if identity.preferred_username:
            claims["preferred_username"] = identity.preferred_username
        if identity.groups:
            claims[self._groups_claim] = list(identity.groups)
        return claims

    def sign(self, identity: Identity, *, now: float) -> tuple[str, int]:
        """A new header value for ``identity`` and its ``exp``."""
        exp = int(now) + self.lifetime
        header = base64_safe_json({**self._header, "exp": exp})
        payload = base64_safe_json({**self.claims(identity), "exp": exp, "iss": self._issuer})
        signing_input = _segment(header) + b"." + _segment(payload)
        der = self._key.private_key.sign(signing_input, ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        signature = _segment(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
        return (signing_input + b"." + signature).decode("ascii"), exp
