"""The key pairs that sign ``x-amzn-oidc-data``, and the two endpoints that publish their public halves.

Where the keys come from. By default each GATEWAY_SESSION_SECRET entry gives one EC P-256 key pair through
HKDF-SHA256 with its own ``info`` (so the pair is independent of the session encryption keys derived from the same
secret). Every replica that can read sessions therefore signs with, and publishes, the same keys without a second
secret to distribute, and rotating the secret list rotates the signing key the same way: the first entry signs, every
entry's public key is published. GATEWAY_SIGNING_KEY (one or more PEM EC P-256 private keys; the first signs) replaces
the derived keys when the signing key must be managed on its own, for instance shared by gateways that do not share a
session secret.

The ``kid`` is a UUID, as an ALB's is (aws-jwt-verify's AlbJwksCache refuses any other kid): a name-based UUID (v5)
of the SHA-256 of the public key, so it is the same on every replica and names exactly one key.

``GET /oauth2/keys/{kid}`` answers with the public key as PEM (SubjectPublicKeyInfo), as an ALB's key endpoint does;
``GET /oauth2/jwks.json`` with every published key as a JWK set. Neither needs a session.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import re
import uuid
from collections.abc import Iterable
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_PURPOSE = b"cognito-gateway x-amzn-oidc-data signing key v1"
# The order n of P-256 (SEC 2, 2.4.2); cryptography has no public constant for it.
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_KID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:cognito-gateway:signing-key")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z ]+)-----.+?-----END \1-----", re.S)


def derived_private_key(secret: bytes) -> ec.EllipticCurvePrivateKey:
    """The P-256 key pair of one session secret: the same on every replica, for as long as the secret is listed."""
    # FIPS 186-5 A.2.1 ("extra random bits"): 64 bits more than n, reduced into [1, n-1], so the bias is < 2^-64.
    material = HKDF(algorithm=hashes.SHA256(), length=40, salt=None, info=KEY_PURPOSE).derive(secret)
    scalar = int.from_bytes(material, "big") % (P256_ORDER - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP256R1())


def load_private_keys(text: str) -> list[ec.EllipticCurvePrivateKey]:
    """GATEWAY_SIGNING_KEY: PEM EC P-256 private keys (PKCS#8 or SEC 1), unencrypted; ``\\n`` may stand for newlines.

    Raises ValueError with a message that never quotes the key.
    """
    blocks = [match.group(0) for match in _PEM_BLOCK.finditer(text.replace("\\n", "\n"))]
    if not blocks:
        raise ValueError("holds no PEM private key (-----BEGIN PRIVATE KEY----- …)")
    keys = []
    for index, block in enumerate(blocks, start=1):
        try:
            key = serialization.load_pem_private_key(block.encode("ascii", "replace"), password=None)
        except (ValueError, TypeError):
            raise ValueError(f"key {index} is not an unencrypted PEM private key") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
            raise ValueError(f"key {index} is not an EC P-256 key (ES256 needs one: openssl ecparam -name prime256v1)")
        keys.append(key)
    return keys


def _b64url(number: int) -> str:
    return base64.urlsafe_b64encode(number.to_bytes(32, "big")).rstrip(b"=").decode("ascii")


@dataclasses.dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: ec.EllipticCurvePrivateKey = dataclasses.field(repr=False)
    pem: bytes  # the public key, SubjectPublicKeyInfo PEM
    jwk: dict[str, str] = dataclasses.field(repr=False)

    @classmethod
    def of(cls, private_key: ec.EllipticCurvePrivateKey) -> SigningKey:
        public = private_key.public_key()
        der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        kid = str(uuid.uuid5(_KID_NAMESPACE, hashlib.sha256(der).hexdigest()))
        numbers = public.public_numbers()
        jwk = {"kty": "EC", "crv": "P-256", "x": _b64url(numbers.x), "y": _b64url(numbers.y)}
        pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        return cls(kid, private_key, pem, {**jwk, "kid": kid, "alg": "ES256", "use": "sig"})


class SigningKeys:
    """The published keys, in order: the first signs. Built once, at startup."""

    def __init__(self, private_keys: Iterable[ec.EllipticCurvePrivateKey]) -> None:
        keys = [SigningKey.of(key) for key in private_keys]
        if not keys:
            raise ValueError("at least one signing key is needed")
        self.current = keys[0]
        self._by_kid = {key.kid: key for key in keys}  # a secret listed twice gives one key

    @classmethod
    def from_secrets(cls, secrets: Iterable[bytes]) -> SigningKeys:
        return cls(derived_private_key(secret) for secret in secrets)

    @property
    def kids(self) -> tuple[str, ...]:
        return tuple(self._by_kid)

    def pem(self, kid: str) -> bytes | None:
        key = self._by_kid.get(kid)
        return key.pem if key is not None else None

    def jwks(self) -> dict[str, Any]:
        return {"keys": [key.jwk for key in self._by_kid.values()]}


# The endpoints -------------------------------------------------------------------------------------------------
# A kid names one key forever (it is a hash of it), so its PEM can be cached for long; the set changes on rotation.
_PEM_CACHE = "public, max-age=86400"
_JWKS_CACHE = "public, max-age=300"


class KeyEndpoints:
    """``GET /oauth2/keys/{kid}`` and ``GET /oauth2/jwks.json``: public keys only, no session needed."""

    def __init__(self, keys: SigningKeys) -> None:
        self._keys = keys

    async def pem(self, request: web.Request) -> web.Response:
        kid = request.match_info["kid"]
        # SECURITY: the kid is looked up, never used to build a path or URL; anything else is a 404.
        pem = self._keys.pem(kid) if _UUID.match(kid) else None
        if pem is None:
            raise web.HTTPNotFound(reason="No such key")
        return web.Response(body=pem, content_type="text/plain", headers={"Cache-Control": _PEM_CACHE})

    async def jwks(self, request: web.Request) -> web.Response:
        return web.json_response(self._keys.jwks(), headers={"Cache-Control": _JWKS_CACHE})
