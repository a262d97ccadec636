"""gateway.crypto at startup: a ``cryptography`` without AES-GCM-SIV (an OpenSSL before 3.2, or FIPS-only) stops
the gateway with one line that says what is missing, not a traceback. Such a library is simulated by a
``sitecustomize`` that replaces the cipher class before the gateway imports it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .support import ROOT, free_port
from .unit.test_config import MINIMAL

SITECUSTOMIZE = """
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.ciphers import aead


class AESGCMSIV:
    def __init__(self, key):
        raise UnsupportedAlgorithm("AES-GCM-SIV is not supported by this version of OpenSSL.")


aead.AESGCMSIV = AESGCMSIV
"""


def test_a_library_without_the_cipher_stops_startup_with_a_clear_line(tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {
        **os.environ,
        **MINIMAL,
        "COGNITO_ISSUER": f"http://127.0.0.1:{free_port()}/pool",  # nothing there: never reached
        "GATEWAY_LISTEN": f"127.0.0.1:{free_port()}",
        "GATEWAY_WORKERS": "1",
        "PYTHONPATH": str(tmp_path),
    }
    env.pop("COGNITO_USER_POOL_ID", None)
    done = subprocess.run(
        [sys.executable, "-m", "gateway"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1, done.stderr
    assert "AES-GCM-SIV is not available" in done.stderr and "OpenSSL 3.2" in done.stderr
    assert "Traceback" not in done.stderr
