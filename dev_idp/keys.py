"""The pool's signing keys: two RSA keys, one for ID tokens and one for access tokens, as Cognito has.

Cognito's ``kid`` is a 44-character standard-base64 string (with ``+``, ``/`` and ``=``); ours is the base64 of the
SHA-256 of the public key, which has the same shape, so that verifiers that mishandle such kids fail here too.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm


@dataclasses.dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: rsa.RSAPrivateKey

    @classmethod
    def from_private_key(cls, private_key: rsa.RSAPrivateKey) -> SigningKey:
        der = private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return cls(kid=base64.b64encode(hashlib.sha256(der).digest()).decode("ascii"), private_key=private_key)

    def public_jwk(self) -> dict[str, Any]:
        jwk = RSAAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        # Cognito's members, alphabetically as it prints them.
        return {"alg": "RS256", "e": jwk["e"], "kid": self.kid, "kty": "RSA", "n": jwk["n"], "use": "sig"}

    def private_pem(self) -> str:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode("ascii")


@dataclasses.dataclass(frozen=True)
class PoolKeys:
    id_token: SigningKey
    access_token: SigningKey

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.id_token.public_jwk(), self.access_token.public_jwk()]}


def _generate() -> SigningKey:
    return SigningKey.from_private_key(rsa.generate_private_key(public_exponent=65537, key_size=2048))


def _load_pem(pem: str) -> SigningKey:
    key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the keys file must hold RSA private keys")
    return SigningKey.from_private_key(key)


def load_or_create_keys(path: str | Path | None) -> PoolKeys:
    """Keys from ``path`` when it exists; new keys otherwise, written to ``path`` when one is given.

    Persisting keys lets tokens issued before a restart still verify, which is what a relying party expects of a
    real pool; without a path every start has fresh keys.
    """
    if path is not None and Path(path).exists():
        data = json.loads(Path(path).read_text("ascii"))
        return PoolKeys(id_token=_load_pem(data["id_token"]), access_token=_load_pem(data["access_token"]))
    keys = PoolKeys(id_token=_generate(), access_token=_generate())
    if path is not None:
        body = json.dumps({"id_token": keys.id_token.private_pem(), "access_token": keys.access_token.private_pem()})
        # Private keys: readable by the owner only.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(body)
    return keys
