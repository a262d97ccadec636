"""``python -m gateway.healthcheck``: the container HEALTHCHECK. Exit 0 when ``/oauth2/healthz`` answers 200.

It reads GATEWAY_LISTEN like the gateway does, so the check follows the port when the port is changed, and
speaks https when GATEWAY_TLS_CERT_FILE is set.
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.request


def _served_certificates(cert_file: str) -> ssl.SSLContext:
    """Trust exactly the certificates the gateway is configured to serve: the check connects to loopback, a name
    its certificate does not carry, and must still not accept whatever answers there."""
    context = ssl.create_default_context(cafile=cert_file)
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # the leaf itself (or its intermediate) is the anchor
    # SECURITY: only the host name check is off (127.0.0.1 is not in the certificate); the chain is verified.
    context.check_hostname = False
    return context


def main() -> int:
    listen = os.environ.get("GATEWAY_LISTEN", "0.0.0.0:8000")
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    cert_file = os.environ.get("GATEWAY_TLS_CERT_FILE", "").strip()
    scheme = "https" if cert_file else "http"
    url = f"{scheme}://{host if ':' not in host else f'[{host}]'}:{port}/oauth2/healthz"
    try:
        context = _served_certificates(cert_file) if cert_file else None
        with urllib.request.urlopen(url, timeout=3, context=context) as response:  # noqa: S310 (http or https)
            return 0 if response.status == 200 else 1
    except OSError as exc:
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
