"""Encryption for cookies and stored sessions, derived from GATEWAY_SESSION_SECRET.

Each configured secret gives one Fernet key per purpose through HKDF-SHA256, so a session cookie can never be
decrypted as login state or the other way round. The first secret encrypts; every secret decrypts, which is how a
secret is rotated without signing anyone out: ``Sealer.open`` says when a value was sealed under an older secret,
so its owner rewrites it under the first.
"""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SESSION_PURPOSE = b"cognito-gateway session cookie v1"
LOGIN_PURPOSE = b"cognito-gateway login state v1"

__all__ = ["LOGIN_PURPOSE", "SESSION_PURPOSE", "InvalidToken", "Sealer"]


def _derive(secret: bytes, purpose: bytes) -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(secret)
    return Fernet(base64.urlsafe_b64encode(key))


class Sealer:
    """Authenticated encryption under the first secret; opening under any of them."""

    def __init__(self, secrets: tuple[bytes, ...], purpose: bytes) -> None:
        keys = [_derive(secret, purpose) for secret in secrets]
        self._first = keys[0]
        self._all = MultiFernet(keys)

    def seal(self, data: bytes) -> bytes:
        return self._first.encrypt(data)

    def open(self, token: bytes, *, ttl: int | None = None) -> tuple[bytes, bool]:
        """The plaintext, and whether it was sealed under an older secret; raises InvalidToken."""
        try:
            return self._first.decrypt(token, ttl=ttl), False
        except InvalidToken:
            return self._all.decrypt(token, ttl=ttl), True
