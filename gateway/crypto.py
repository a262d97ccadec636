"""Encryption keys for cookies, derived from GATEWAY_SESSION_SECRET.

Each configured secret gives one Fernet key per purpose through HKDF-SHA256, so a session cookie can never be
decrypted as login state or the other way round. The first secret encrypts; every secret decrypts
(``MultiFernet``), which is how a secret is rotated without signing anyone out.
"""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SESSION_PURPOSE = b"cognito-gateway session cookie v1"
LOGIN_PURPOSE = b"cognito-gateway login state v1"


def _derive(secret: bytes, purpose: bytes) -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(secret)
    return Fernet(base64.urlsafe_b64encode(key))


def fernet_for(secrets: tuple[bytes, ...], purpose: bytes) -> MultiFernet:
    return MultiFernet([_derive(secret, purpose) for secret in secrets])
