"""AWS's own verifier for ALB's ``x-amzn-oidc-data`` (``aws-jwt-verify``'s ``AlbJwtVerifier``), run by Node.

The gateway's signed header is meant for apps written for an ALB, and those verify it with this library (or with the
few lines of AWS's Python example, which the tests run with PyJWT). ``tests/alb_verify/verify.mjs`` puts the
library behind a small HTTP server configured like such an app: the ALB ARN, the issuer, the client id and the key
endpoint (the gateway's ``/oauth2/keys``). It needs Node.js and ``npm ci --prefix tests/alb_verify`` (``make test``
runs that when ``tests/alb_verify/node_modules`` is missing). Without them the tests that ask for it are skipped
with the reason, and with ``CI=true`` they fail instead, as the OIDC peer's do.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from typing import Any

import aiohttp
import pytest

from .support import ROOT, CapturedProcess

VERIFY_DIR = ROOT / "tests" / "alb_verify"


def require_node() -> str:
    """The node executable; otherwise skip the test, or fail it under ``CI=true``."""
    node = shutil.which("node")
    problem = None
    if node is None:
        problem = "no Node.js on this machine (`apt-get install nodejs npm`)"
    elif not (VERIFY_DIR / "node_modules" / "aws-jwt-verify" / "package.json").exists():
        problem = "tests/alb_verify/node_modules is missing (run `npm ci --prefix tests/alb_verify`)"
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {problem}; .ci/run must provide both")
        pytest.skip(f"{problem}: aws-jwt-verify tests not run")
    assert node is not None
    return node


@dataclasses.dataclass
class AlbVerifier:
    """A running verifier: ``await verifier.verify(token)`` is aws-jwt-verify's verdict on it."""

    process: CapturedProcess
    url: str

    async def verify(self, token: str, **overrides: str) -> dict[str, Any]:
        """``{"valid": True, "payload": …}`` or ``{"valid": False, "error": <class>, "message": …}``.

        ``overrides`` (``albArn``, ``clientId``) replace what the verifier was started with, for this call."""
        async with aiohttp.ClientSession() as client:
            async with client.post(f"{self.url}/verify", json={"token": token, **overrides}) as response:
                assert response.status == 200, await response.text()
                return await response.json()

    def key_fetches(self) -> list[str]:
        return [line for line in self.process.output().splitlines() if line.startswith("fetch ")]

    def stop(self) -> None:
        self.process.stop()


def start_alb_verifier(*, alb_arn: str, issuer: str, client_id: str, keys_url: str) -> AlbVerifier:
    node = require_node()
    env = {
        "ALB_VERIFY_ARN": alb_arn,
        "ALB_VERIFY_ISSUER": issuer,
        "ALB_VERIFY_CLIENT_ID": client_id,
        "ALB_VERIFY_KEYS_URL": keys_url,
    }
    process = CapturedProcess(["verify.mjs"], env, cwd=VERIFY_DIR, program=node)
    try:
        url = process.wait_for(r"^alb-verify listening on (http://127\.0\.0\.1:\d+)$").group(1)
    except AssertionError:
        process.stop()
        raise
    return AlbVerifier(process, url)
