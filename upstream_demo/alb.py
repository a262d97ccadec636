"""Checking ``x-amzn-oidc-data`` the way AWS's Python example for an ALB does, so the demo shows it works unchanged.

The steps are the ALB user guide's: read the ``kid`` from the header with ``base64.b64decode``, fetch the PEM public
key from ``{key endpoint}/{kid}``, and ``jwt.decode(token, pem, algorithms=["ES256"])``; plus the checks the guide
recommends and aws-jwt-verify makes: ``signer`` is the expected ARN, ``client`` the expected client id, and ``iss`` the
same in header and payload. The key endpoint comes from configuration (UPSTREAM_DEMO_ALB_KEYS_URL), never from the
request: a client reaching the app directly could otherwise point it at keys of its own.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

import jwt

DEFAULT_ARN = "arn:aws:elasticloadbalancing:us-east-1:000000000000:loadbalancer/app/cognito-gateway/0000000000000000"
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_MAX_KEYS = 16


class AlbHeaderVerifier:
    def __init__(self, keys_url: str, *, alb_arn: str = DEFAULT_ARN, client_id: str | None = None) -> None:
        self._keys_url = keys_url.rstrip("/")
        self._arn = alb_arn
        self._client_id = client_id
        self._keys: dict[str, str] = {}  # kid -> PEM; a kid names one key forever

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> AlbHeaderVerifier | None:
        """UPSTREAM_DEMO_ALB_KEYS_URL (unset: headers are not checked), _ALB_ARN, _ALB_CLIENT_ID."""
        keys_url = environ.get("UPSTREAM_DEMO_ALB_KEYS_URL")
        if not keys_url:
            return None
        arn = environ.get("UPSTREAM_DEMO_ALB_ARN") or DEFAULT_ARN
        return cls(keys_url, alb_arn=arn, client_id=environ.get("UPSTREAM_DEMO_ALB_CLIENT_ID") or None)

    def _public_key(self, kid: str) -> str:
        pem = self._keys.get(kid)
        if pem is None:
            with urllib.request.urlopen(f"{self._keys_url}/{kid}", timeout=5) as response:  # noqa: S310 (configured)
                pem = response.read().decode("ascii")
            if len(self._keys) >= _MAX_KEYS:
                self._keys.clear()
            self._keys[kid] = pem
        return pem

    def verify(self, token: str) -> tuple[str, dict[str, Any] | None]:
        """("verified", claims), or (why not, None)."""
        try:
            header = json.loads(base64.b64decode(token.split(".")[0]))  # as AWS's example reads it
        except (ValueError, binascii.Error):
            return "invalid: the header does not decode", None
        if not isinstance(header, dict) or header.get("signer") != self._arn:
            return "invalid: not signed by the expected ARN", None
        kid = header.get("kid")
        # SECURITY: the kid goes into a URL, so only a UUID is used (an ALB's kids are UUIDs).
        if not isinstance(kid, str) or not _UUID.match(kid):
            return "invalid: the kid is not a UUID", None
        if self._client_id is not None and header.get("client") != self._client_id:
            return "invalid: issued for another client", None
        try:
            pem = self._public_key(kid)
        except (urllib.error.URLError, OSError, UnicodeDecodeError):
            return "not verified: the key endpoint did not give the key", None
        try:
            claims = jwt.decode(token, pem, algorithms=["ES256"], options={"require": ["exp", "iss", "sub"]})
        except jwt.PyJWTError as exc:
            return f"invalid: {exc.__class__.__name__}", None
        if claims.get("iss") != header.get("iss"):
            return "invalid: header and payload name different issuers", None
        return "verified", claims
