"""Encryption for cookies and stored sessions, derived from GATEWAY_SESSION_SECRET.

Each configured secret gives one key per purpose through HKDF-SHA256, so a session cookie can never be decrypted
as login state or the other way round. The first secret encrypts; every secret decrypts, which is how a secret is
rotated without signing anyone out: ``Sealer.open`` says when a value was sealed under an older secret (or in the
older format), so its owner rewrites it under the first.

A sealed value is ``base64url(version ‖ sealed-at ‖ nonce ‖ AES-256-GCM-SIV(plaintext))``, version and time
authenticated as associated data. AES-GCM-SIV (RFC 8452) is one call into ``cryptography`` per value, where
Fernet is a dozen Python-level objects (CBC, a Python padder, HMAC) on every sign-in redirect and every
authenticated request; and unlike plain GCM, a repeated random nonce never exposes the key, whatever number of
values anyone makes the gateway seal. Values sealed by Fernet (releases before this format) still open, as stale,
so they are rewritten on first use; reading them goes in a later release.
"""

from __future__ import annotations

import base64
import binascii
import os
import struct
import time
from collections.abc import Callable

from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SESSION_PURPOSE = b"cognito-gateway session cookie v1"
LOGIN_PURPOSE = b"cognito-gateway login state v1"

__all__ = ["LOGIN_PURPOSE", "SESSION_PURPOSE", "CipherUnavailable", "InvalidToken", "Sealer"]

VERSION = 0x02  # Fernet's tokens begin with 0x80
_HEADER = struct.Struct(">BQ")  # version, sealed-at (Unix seconds)
_NONCE = 12
_TAG = 16
MAX_CLOCK_SKEW = 60  # seconds a value's time may be ahead of ours (another worker's clock), as Fernet allows


class CipherUnavailable(RuntimeError):
    """This ``cryptography`` has no AES-GCM-SIV (built against an OpenSSL before 3.2, or a FIPS-only one)."""


def _derive(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


class Sealer:
    """Authenticated encryption under the first secret; opening under any of them."""

    def __init__(self, secrets: tuple[bytes, ...], purpose: bytes, clock: Callable[[], float] = time.time) -> None:
        try:
            # SECURITY: a key of its own for the AEAD format (never the Fernet key reused under another algorithm).
            self._ciphers = [AESGCMSIV(_derive(secret, purpose + b" aes-gcm-siv")) for secret in secrets]
        except UnsupportedAlgorithm as exc:
            raise CipherUnavailable(
                "AES-GCM-SIV is not available: cryptography must be built with OpenSSL 3.2 or later (its PyPI "
                "wheels are; a FIPS-only OpenSSL has no AES-GCM-SIV)"
            ) from exc
        self._legacy = MultiFernet([Fernet(base64.urlsafe_b64encode(_derive(secret, purpose))) for secret in secrets])
        self._clock = clock

    def seal(self, data: bytes) -> bytes:
        """The sealed value, base64url without padding (a cookie value that needs no quoting)."""
        header = _HEADER.pack(VERSION, int(self._clock()))
        nonce = os.urandom(_NONCE)
        sealed = header + nonce + self._ciphers[0].encrypt(nonce, data, header)
        return base64.urlsafe_b64encode(sealed).rstrip(b"=")

    def open(self, token: bytes, *, ttl: int | None = None) -> tuple[bytes, bool]:
        """The plaintext, and whether it must be rewritten (an older secret or format); raises InvalidToken."""
        padded = token + b"=" * (-len(token) % 4)
        try:
            raw = base64.urlsafe_b64decode(padded)
        except (binascii.Error, ValueError):
            raise InvalidToken from None
        # SECURITY: one spelling per value: the decoder skips stray characters and takes "+" and "/" for "-" and "_".
        if base64.urlsafe_b64encode(raw) != padded:
            raise InvalidToken
        if raw[:1] == b"\x80":
            return self._legacy.decrypt(padded, ttl=ttl), True
        if len(raw) < _HEADER.size + _NONCE + _TAG or raw[0] != VERSION:
            raise InvalidToken
        header, nonce, sealed = (
            raw[: _HEADER.size],
            raw[_HEADER.size : _HEADER.size + _NONCE],
            raw[_HEADER.size + _NONCE :],
        )
        for index, cipher in enumerate(self._ciphers):
            try:
                plain = cipher.decrypt(nonce, sealed, header)
            except InvalidTag:
                continue
            self._check_age(_HEADER.unpack(header)[1], ttl)
            return plain, index > 0
        raise InvalidToken

    def _check_age(self, sealed_at: int, ttl: int | None) -> None:
        """As Fernet checks a TTL: only when one is given (Redis copies expire in Redis, whatever a clock says)."""
        if ttl is None:
            return
        now = self._clock()
        # SECURITY: a value from beyond the skew in the future is refused, so that its TTL cannot be stretched.
        if sealed_at > now + MAX_CLOCK_SKEW or now - sealed_at > ttl:
            raise InvalidToken
