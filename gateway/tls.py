"""TLS: the https the gateway can serve itself, and the trust it places in an https upstream.

- :func:`server_context` builds the listener's context: TLS 1.2 or newer, forward-secret AEAD ciphers only, the
  PEM chain and key named by ``GATEWAY_TLS_CERT_FILE`` and ``GATEWAY_TLS_KEY_FILE``.
- :class:`CertificateReloader` watches those two files and loads them again into the *same* context when they
  change, so that renewals (certbot, cert-manager) reach new handshakes without a restart. A pair caught half
  written (a new certificate beside the old key) is refused and the served pair stays until the pair is whole.
- :func:`upstream_context` verifies an https upstream against the system CAs, or against
  ``GATEWAY_UPSTREAM_CA_FILE`` alone. There is deliberately no way to turn verification off.
- :func:`redirect_app` is the plain-http listener of ``GATEWAY_HTTP_REDIRECT_LISTEN``: it only redirects to https.
- :func:`install` wires the above into ``python -m gateway``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from yarl import URL

from .access_log import AccessLogger

if TYPE_CHECKING:
    from .config import Settings, TlsSettings

log = logging.getLogger("gateway.tls")

# Mozilla's "intermediate" TLS 1.2 suites without the DHE ones (they need DH parameters and are slow): ECDHE key
# exchange (forward secrecy) with AES-GCM or ChaCha20-Poly1305 only. TLS 1.3 suites are all AEAD; OpenSSL's set
# of them is kept.
TLS12_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)
RELOAD_INTERVAL = 2.0  # seconds between checks of the certificate files: two stat() calls


def _no_password() -> str:
    # SECURITY: an encrypted key must fail to load, never make OpenSSL prompt on a terminal (or hang without one).
    return ""


def load_pair(context: ssl.SSLContext, cert_file: Path, key_file: Path) -> None:
    context.load_cert_chain(str(cert_file), str(key_file), password=_no_password)


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # SECURITY: TLS 1.0/1.1 are deprecated (RFC 8996); TLS 1.2 only with the forward-secret AEAD suites above.
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    # SECURITY: no TLS compression (CRIME) and no client-initiated renegotiation.
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.set_alpn_protocols(["http/1.1"])
    load_pair(context, cert_file, key_file)
    return context


def pem_problems(cert_name: str, cert_file: Path, key_name: str, key_file: Path) -> list[str]:
    """Why this certificate chain and key cannot be served, one message per variable; [] when they can."""
    problems = []
    try:
        x509.load_pem_x509_certificates(cert_file.read_bytes())
    except OSError as exc:
        problems.append(f"{cert_name}: {str(cert_file)!r} cannot be read ({exc.strerror})")
    except ValueError:
        problems.append(f"{cert_name}: {str(cert_file)!r} holds no PEM certificate")
    try:
        serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    except OSError as exc:
        problems.append(f"{key_name}: {str(key_file)!r} cannot be read ({exc.strerror})")
    except TypeError:
        problems.append(f"{key_name}: the key is encrypted; give it unencrypted (and readable by the gateway only)")
    except (ValueError, UnsupportedAlgorithm):
        # SECURITY: the message names the file, never a byte of its content.
        problems.append(f"{key_name}: {str(key_file)!r} holds no PEM private key")
    if not problems:
        try:
            server_context(cert_file, key_file)
        except ssl.SSLError as exc:
            problems.append(f"{cert_name}/{key_name}: the pair cannot be served ({exc.reason or exc})")
    return problems


def describe(cert_file: Path) -> str:
    """Serial and expiry of the leaf certificate, for the log."""
    try:
        leaf = x509.load_pem_x509_certificates(cert_file.read_bytes())[0]
    except (OSError, ValueError):
        return "(unreadable)"
    return f"serial {leaf.serial_number:x}, valid until {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"


Stamp = tuple[tuple[int, int, int, int] | None, ...]


def _stamp(*paths: Path) -> Stamp:
    """What changes when a file is rewritten or replaced (os.stat follows cert-manager's ..data symlink)."""
    stamps = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            stamps.append(None)
        else:
            stamps.append((st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev))
    return tuple(stamps)


class CertificateReloader:
    """Loads the certificate files again into the live context when they change, so new handshakes use them."""

    def __init__(
        self, context: ssl.SSLContext, cert_file: Path, key_file: Path, *, interval: float = RELOAD_INTERVAL
    ) -> None:
        self.context = context
        self.cert_file = cert_file
        self.key_file = key_file
        self.interval = interval
        self._loaded = _stamp(cert_file, key_file)
        self._refused: Stamp | None = None

    def check(self) -> bool:
        """Reload when the files changed and form a servable pair; True when the served certificate changed."""
        stamp = _stamp(self.cert_file, self.key_file)
        if stamp == self._loaded:
            return False
        try:
            # A scratch context first: a failed load_cert_chain can leave a context with a certificate and a key
            # that do not match, and the live one must keep serving the old pair meanwhile. (Files replaced again
            # between the two loads can still fail the second; the next check, one interval later, repairs it.)
            load_pair(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), self.cert_file, self.key_file)
            load_pair(self.context, self.cert_file, self.key_file)
        except OSError as exc:  # ssl.SSLError is an OSError
            if stamp != self._refused:
                log.warning("certificate files changed but cannot be loaded yet (%s); still serving the old pair", exc)
                self._refused = stamp
            return False
        self._loaded = stamp
        log.info("certificate reloaded from %s: %s", self.cert_file, describe(self.cert_file))
        return True

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.check()

    async def background(self, _: web.Application) -> AsyncIterator[None]:
        """A ``cleanup_ctx`` entry: the watcher runs as long as the application does."""
        task = asyncio.create_task(self._run())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def upstream_context(ca_file: Path | None) -> ssl.SSLContext:
    """Client context for an https upstream: the system CAs, or only the CAs in ``ca_file``."""
    # SECURITY: certificate and host name are always verified (CERT_REQUIRED, check_hostname); no switch turns
    # that off, because an unverified upstream hands every user's identity headers to whoever answers.
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def redirect_app(public_url: URL) -> web.Application:
    """Answers every request with 308 (the method is kept) to the same path and query on ``public_url``."""
    origin = str(public_url.origin())

    async def redirect(request: web.Request) -> web.StreamResponse:
        target = request.raw_path if request.raw_path.startswith("/") else "/"
        # SECURITY: scheme and host come from GATEWAY_PUBLIC_URL, never from the request's Host header, so this
        # listener cannot be made to redirect anywhere else. The target goes byte for byte (HTTPPermanentRedirect
        # would re-encode it through yarl).
        return web.Response(status=308, text="Use https.\n", headers={"Location": origin + target})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", redirect)
    return app


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        # reuse_port: every worker (GATEWAY_WORKERS) opens this listener too.
        return socket.create_server((host, port), family=family, backlog=1024, reuse_port=True)
    except OSError as exc:
        raise OSError(f"cannot listen on GATEWAY_HTTP_REDIRECT_LISTEN={host}:{port}: {exc.strerror}") from None


def _redirect_listener(sock: socket.socket, public_url: URL) -> Callable[[web.Application], AsyncIterator[None]]:
    async def serve(_: web.Application) -> AsyncIterator[None]:
        runner = web.AppRunner(redirect_app(public_url), access_log_class=AccessLogger)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        host, port = sock.getsockname()[:2]
        log.info("redirecting http on %s:%s to %s", host, port, public_url.origin())
        yield
        await runner.cleanup()

    return serve


def install(app: web.Application, settings: Settings) -> ssl.SSLContext | None:
    """TLS for ``python -m gateway``: the context for ``web.run_app`` (None: plain http), with the certificate
    watcher and the redirect listener added to ``app``'s lifecycle. Raises OSError when a socket cannot bind."""
    tls: TlsSettings = settings.tls
    if tls.cert_file is None or tls.key_file is None:
        return None
    context = server_context(tls.cert_file, tls.key_file)
    log.info("serving https with %s: %s", tls.cert_file, describe(tls.cert_file))
    app.cleanup_ctx.append(CertificateReloader(context, tls.cert_file, tls.key_file).background)
    if tls.redirect_listen is not None:
        app.cleanup_ctx.append(_redirect_listener(_listen(*tls.redirect_listen), settings.public_url))
    return context
