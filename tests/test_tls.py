"""TLS served by the gateway itself, and https upstreams: a CA made here, real gateway processes on loopback.

A client that trusts the CA gets through, one that does not fails on the certificate; old protocols and
non-forward-secret ciphers are refused; a renewed certificate is served without a restart (and a half-written
renewal is not); the redirect listener only redirects; an https upstream is verified against
GATEWAY_UPSTREAM_CA_FILE and refused without it. Bad TLS settings stop startup with exit 2.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.config import ConfigError, Settings

from .stack import SESSION_SECRET, alice_session, forged_cookie, start_gateway
from .support import ROOT, CapturedProcess, DevIdpProcess, free_port, start_dev_idp


@dataclasses.dataclass
class LocalCa:
    """A certificate authority made for one test run; ``issue`` signs leaf certificates for loopback names."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    file: Path

    @classmethod
    def create(cls, directory: Path, name: str = "cognito-gateway test CA") -> LocalCa:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(*[False] * 5, True, True, False, False), critical=True)
            .sign(key, hashes.SHA256())
        )
        file = directory / f"{name.replace(' ', '-')}.pem"
        file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(key, cert, file)

    def issue(
        self, cert_file: Path, key_file: Path, *, key: ec.EllipticCurvePrivateKey | None = None, write_key: bool = True
    ) -> int:
        """Write a leaf for 127.0.0.1 and localhost, and its key (each atomically, as certbot and cert-manager do);
        return its serial. ``write_key=False`` writes only the certificate, for a given ``key``."""
        key = key or ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        serial = x509.random_serial_number()
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=2))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        _replace(cert_file, cert.public_bytes(serialization.Encoding.PEM))
        if write_key:
            _replace(key_file, _key_pem(key))
        return serial


def _key_pem(key: ec.EllipticCurvePrivateKey, password: bytes | None = None) -> bytes:
    encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def _replace(path: Path, data: bytes) -> None:
    scratch = path.with_name(path.name + ".new")
    scratch.write_bytes(data)
    os.replace(scratch, path)


@pytest.fixture(scope="module")
def idp() -> Iterator[DevIdpProcess]:
    server = start_dev_idp()
    yield server
    server.process.stop()


@pytest.fixture
def ca(tmp_path: Path) -> LocalCa:
    return LocalCa.create(tmp_path)


def _trusting(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


def served_certificate(port: int, context: ssl.SSLContext) -> tuple[int, str]:
    """Handshake with the gateway: the serial of the certificate it sent, and the TLS version agreed."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
            der = conn.getpeercert(binary_form=True)
            version = conn.version()
    assert der is not None and version is not None
    return x509.load_der_x509_certificate(der).serial_number, version


def wait_for_https(port: int, context: ssl.SSLContext, gateway: CapturedProcess) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            served_certificate(port, context)
            return
        except OSError:
            if time.monotonic() > deadline or gateway.proc.poll() is not None:
                raise AssertionError("the gateway never answered https:\n" + gateway.output()) from None
            time.sleep(0.1)


def gateway_env(idp: DevIdpProcess, port: int, **variables: str) -> dict[str, str]:
    return {
        **idp.env,
        "GATEWAY_UPSTREAM": "http://127.0.0.1:9",  # nothing listens there; these tests stop at the gateway
        "GATEWAY_PUBLIC_URL": f"https://127.0.0.1:{port}",
        "GATEWAY_LISTEN": f"127.0.0.1:{port}",
        "GATEWAY_SESSION_SECRET": SESSION_SECRET,
        **variables,
    }


@dataclasses.dataclass
class TlsGateway:
    process: CapturedProcess
    port: int
    cert_file: Path
    key_file: Path
    env: dict[str, str]


def https_env(idp: DevIdpProcess, ca: LocalCa, tmp_path: Path, **extra: str) -> tuple[dict, int, tuple[Path, Path]]:
    """A gateway's environment serving https with a certificate from ``ca``, plus a redirect listener."""
    cert_file, key_file = tmp_path / "tls.crt", tmp_path / "tls.key"
    ca.issue(cert_file, key_file)
    port, redirect_port = free_port(), free_port()
    env = gateway_env(
        idp,
        port,
        GATEWAY_TLS_CERT_FILE=str(cert_file),
        GATEWAY_TLS_KEY_FILE=str(key_file),
        GATEWAY_HTTP_REDIRECT_LISTEN=f"127.0.0.1:{redirect_port}",
        **extra,
    )
    return env, port, (cert_file, key_file)


@pytest.fixture
def tls_gateway(idp: DevIdpProcess, ca: LocalCa, tmp_path: Path) -> Iterator[TlsGateway]:
    """A gateway serving https with a certificate from ``ca``, and a redirect listener on another port."""
    env, port, (cert_file, key_file) = https_env(idp, ca, tmp_path)
    process = start_gateway(env, wait_ready=False)
    try:
        wait_for_https(port, _trusting(ca.file), process)
        yield TlsGateway(process, port, cert_file, key_file, env)
    finally:
        process.stop()


def test_a_client_that_trusts_the_ca_gets_through(tls_gateway: TlsGateway, ca: LocalCa) -> None:
    url = f"https://127.0.0.1:{tls_gateway.port}/oauth2/healthz"
    with urllib.request.urlopen(url, timeout=5, context=_trusting(ca.file)) as response:
        assert response.status == 200
    _, version = served_certificate(tls_gateway.port, _trusting(ca.file))
    assert version in ("TLSv1.2", "TLSv1.3")


def test_a_client_that_does_not_trust_the_ca_fails_on_the_certificate(tls_gateway: TlsGateway) -> None:
    with pytest.raises(urllib.error.URLError) as caught:
        urllib.request.urlopen(f"https://127.0.0.1:{tls_gateway.port}/oauth2/healthz", timeout=5)
    assert isinstance(caught.value.reason, ssl.SSLCertVerificationError), caught.value


def test_old_protocols_and_ciphers_without_forward_secrecy_are_refused(tls_gateway: TlsGateway, ca: LocalCa) -> None:
    tls11 = _trusting(ca.file)
    with pytest.warns(DeprecationWarning, match="TLSv1_1"):
        tls11.minimum_version = tls11.maximum_version = ssl.TLSVersion.TLSv1_1
    tls11.set_ciphers("ALL:@SECLEVEL=0")  # the client offers TLS 1.1 for real; the server must refuse it
    # The server hangs up (asyncio drops the alert); a client unable to offer TLS 1.1 would fail NO_PROTOCOLS_AVAILABLE.
    with pytest.raises(ssl.SSLError, match=r"PROTOCOL_VERSION|UNEXPECTED_EOF"):
        served_certificate(tls_gateway.port, tls11)
    static_rsa = _trusting(ca.file)
    static_rsa.maximum_version = ssl.TLSVersion.TLSv1_2
    static_rsa.set_ciphers("AES128-GCM-SHA256:AES256-SHA256:ECDHE-ECDSA-AES128-SHA")
    with pytest.raises(ssl.SSLError, match=r"HANDSHAKE_FAILURE|UNEXPECTED_EOF"):
        served_certificate(tls_gateway.port, static_rsa)
    tls12 = _trusting(ca.file)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    assert served_certificate(tls_gateway.port, tls12)[1] == "TLSv1.2"


def wait_for_serial(port: int, ca: LocalCa, serial: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while served_certificate(port, _trusting(ca.file))[0] != serial:
        assert time.monotonic() < deadline, "the renewed certificate was not served"
        time.sleep(0.2)


def test_a_renewed_certificate_is_served_without_a_restart(tls_gateway: TlsGateway, ca: LocalCa) -> None:
    first, _ = served_certificate(tls_gateway.port, _trusting(ca.file))
    pid = tls_gateway.process.proc.pid
    second = ca.issue(tls_gateway.cert_file, tls_gateway.key_file)
    assert second != first
    wait_for_serial(tls_gateway.port, ca, second)
    assert tls_gateway.process.proc.poll() is None and tls_gateway.process.proc.pid == pid
    tls_gateway.process.wait_for(rf"certificate reloaded from .*serial {second:x}")


def test_a_half_written_renewal_keeps_the_old_pair_until_the_key_arrives(tls_gateway: TlsGateway, ca: LocalCa) -> None:
    """certbot writes the certificate and the key one after the other; in between they do not match."""
    old, _ = served_certificate(tls_gateway.port, _trusting(ca.file))
    new_key = ec.generate_private_key(ec.SECP256R1())
    new = ca.issue(tls_gateway.cert_file, tls_gateway.key_file, key=new_key, write_key=False)
    tls_gateway.process.wait_for(r"certificate files changed but cannot be loaded yet", timeout=10)
    assert served_certificate(tls_gateway.port, _trusting(ca.file))[0] == old, "the old pair is still served"
    _replace(tls_gateway.key_file, _key_pem(new_key))
    wait_for_serial(tls_gateway.port, ca, new)


def test_the_redirect_listener_only_redirects_to_the_public_https_url(tls_gateway: TlsGateway) -> None:
    redirect = tls_gateway.env["GATEWAY_HTTP_REDIRECT_LISTEN"]
    for method in ("GET", "POST"):
        request = urllib.request.Request(
            f"http://{redirect}/some/path?q=1&r=%2F", method=method, headers={"Host": "evil.example"}
        )
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.build_opener(_NoRedirects()).open(request, timeout=5)
        caught.value.close()
        assert caught.value.code == 308
        assert caught.value.headers["Location"] == f"https://127.0.0.1:{tls_gateway.port}/some/path?q=1&r=%2F"


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def test_the_container_healthcheck_speaks_https_and_checks_the_served_certificate(
    tls_gateway: TlsGateway, ca: LocalCa, tmp_path: Path
) -> None:
    def healthcheck(cert_file: Path) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "GATEWAY_LISTEN": f"0.0.0.0:{tls_gateway.port}", "GATEWAY_TLS_CERT_FILE": str(cert_file)}
        return subprocess.run(
            [sys.executable, "-m", "gateway.healthcheck"], env=env, capture_output=True, text=True, timeout=30
        )

    assert healthcheck(tls_gateway.cert_file).returncode == 0
    other = LocalCa.create(tmp_path, "another CA")
    other.issue(tmp_path / "other.crt", tmp_path / "other.key")
    result = healthcheck(tmp_path / "other.crt")
    assert result.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in result.stderr


# --- https upstreams -------------------------------------------------------------------------------------------


async def _https_upstream(ca: LocalCa, tmp_path: Path) -> tuple[web.AppRunner, str]:
    cert_file, key_file = tmp_path / "upstream.crt", tmp_path / "upstream.key"
    ca.issue(cert_file, key_file)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert_file), str(key_file))

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=f"hello {request.headers.get('X-Forwarded-User')} over https")

    app = web.Application()
    app.router.add_get("/{tail:.*}", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    return runner, f"https://127.0.0.1:{port}"


@pytest.mark.parametrize("with_ca_file", [True, False], ids=["with-GATEWAY_UPSTREAM_CA_FILE", "system-CAs-only"])
async def test_an_https_upstream_is_verified(
    idp: DevIdpProcess, ca: LocalCa, tmp_path: Path, with_ca_file: bool
) -> None:
    runner, upstream_url = await _https_upstream(ca, tmp_path)
    port = free_port()
    env = {
        **gateway_env(idp, port, GATEWAY_UPSTREAM=upstream_url),
        "GATEWAY_PUBLIC_URL": f"http://127.0.0.1:{port}",
        **({"GATEWAY_UPSTREAM_CA_FILE": str(ca.file)} if with_ca_file else {}),
    }
    gateway = start_gateway(env)
    try:
        cookies = forged_cookie(env, alice_session(created=time.time()))
        async with aiohttp.ClientSession(cookies=cookies) as client:
            async with client.get(f"http://127.0.0.1:{port}/hello", headers={"Accept": "application/json"}) as got:
                body = await got.text()
        if with_ca_file:
            assert (got.status, body) == (200, "hello alice over https")
        else:
            assert got.status == 502, body
            gateway.wait_for(r"upstream unavailable \(UpstreamCertificateError\)")
    finally:
        gateway.stop()
        await runner.cleanup()


# --- configuration ---------------------------------------------------------------------------------------------

BASE = {
    "COGNITO_USER_POOL_ID": "eu-west-1_AbC123xyz",
    "COGNITO_CLIENT_ID": "client",
    "GATEWAY_UPSTREAM": "https://app.internal:8443",
    "GATEWAY_PUBLIC_URL": "https://app.example.com",
    "GATEWAY_SESSION_SECRET": SESSION_SECRET,
    "GATEWAY_LISTEN": "0.0.0.0:8443",
}


def test_tls_settings_are_parsed(ca: LocalCa, tmp_path: Path) -> None:
    ca.issue(tmp_path / "tls.crt", tmp_path / "tls.key")
    tls = Settings.from_env(
        {
            **BASE,
            "GATEWAY_TLS_CERT_FILE": str(tmp_path / "tls.crt"),
            "GATEWAY_TLS_KEY_FILE": str(tmp_path / "tls.key"),
            "GATEWAY_HTTP_REDIRECT_LISTEN": "[::]:8080",
            "GATEWAY_UPSTREAM_CA_FILE": str(ca.file),
        }
    ).tls
    assert tls.enabled and tls.cert_file == tmp_path / "tls.crt" and tls.key_file == tmp_path / "tls.key"
    assert tls.redirect_listen == ("::", 8080) and tls.upstream_ca_file == ca.file
    plain = Settings.from_env(BASE).tls
    assert not plain.enabled and plain.redirect_listen is None and plain.upstream_ca_file is None


def _bad_files(ca: LocalCa, tmp_path: Path) -> dict[str, Path]:
    good_cert, good_key = tmp_path / "good.crt", tmp_path / "good.key"
    ca.issue(good_cert, good_key)
    other_key = tmp_path / "other.key"
    other_key.write_bytes(_key_pem(ec.generate_private_key(ec.SECP256R1())))
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(_key_pem(ec.generate_private_key(ec.SECP256R1()), b"a passphrase"))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n")
    return {"cert": good_cert, "key": good_key, "other_key": other_key, "encrypted": encrypted, "garbage": garbage}


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({"GATEWAY_TLS_CERT_FILE": "cert"}, ["GATEWAY_TLS_KEY_FILE: required when GATEWAY_TLS_CERT_FILE"]),
        ({"GATEWAY_TLS_KEY_FILE": "key"}, ["GATEWAY_TLS_CERT_FILE: required when GATEWAY_TLS_KEY_FILE"]),
        (
            {"GATEWAY_TLS_CERT_FILE": "/nonexistent/tls.crt", "GATEWAY_TLS_KEY_FILE": "/nonexistent/tls.key"},
            ["GATEWAY_TLS_CERT_FILE: '/nonexistent/tls.crt' cannot be read", "GATEWAY_TLS_KEY_FILE: '/nonexistent"],
        ),
        (
            {"GATEWAY_TLS_CERT_FILE": "garbage", "GATEWAY_TLS_KEY_FILE": "garbage"},
            [
                "GATEWAY_TLS_CERT_FILE: ",
                "holds no PEM certificate",
                "GATEWAY_TLS_KEY_FILE: ",
                "holds no PEM private key",
            ],
        ),
        ({"GATEWAY_TLS_CERT_FILE": "cert", "GATEWAY_TLS_KEY_FILE": "other_key"}, ["the pair cannot be served"]),
        (
            {"GATEWAY_TLS_CERT_FILE": "cert", "GATEWAY_TLS_KEY_FILE": "encrypted"},
            ["GATEWAY_TLS_KEY_FILE: the key is encrypted"],
        ),
        (
            {"GATEWAY_TLS_CERT_FILE": "cert", "GATEWAY_TLS_KEY_FILE": "key", "GATEWAY_PUBLIC_URL": "http://x.example"},
            ["GATEWAY_PUBLIC_URL: must be https"],
        ),
        (
            {"GATEWAY_TLS_CERT_FILE": "cert", "GATEWAY_TLS_KEY_FILE": "key", "GATEWAY_HTTP_REDIRECT_LISTEN": "8080"},
            ["GATEWAY_HTTP_REDIRECT_LISTEN: '8080' must be host:port"],
        ),
        (
            {"GATEWAY_TLS_CERT_FILE": "cert", "GATEWAY_TLS_KEY_FILE": "key", "GATEWAY_HTTP_REDIRECT_LISTEN": ":8443"},
            ["GATEWAY_HTTP_REDIRECT_LISTEN: ':8443' must be host:port"],
        ),
        (
            {
                "GATEWAY_TLS_CERT_FILE": "cert",
                "GATEWAY_TLS_KEY_FILE": "key",
                "GATEWAY_HTTP_REDIRECT_LISTEN": "0.0.0.0:8443",
            },
            ["GATEWAY_HTTP_REDIRECT_LISTEN: port 8443 is GATEWAY_LISTEN's"],
        ),
        ({"GATEWAY_HTTP_REDIRECT_LISTEN": "0.0.0.0:8080"}, ["it needs GATEWAY_TLS_CERT_FILE"]),
        ({"GATEWAY_UPSTREAM_CA_FILE": "garbage"}, ["GATEWAY_UPSTREAM_CA_FILE: ", "holds no PEM CA certificate"]),
        (
            {"GATEWAY_UPSTREAM_CA_FILE": "/nonexistent/ca.pem"},
            ["GATEWAY_UPSTREAM_CA_FILE: '/nonexistent/ca.pem' cannot"],
        ),
    ],
)
def test_bad_tls_settings_are_reported(
    ca: LocalCa, tmp_path: Path, variables: dict[str, str], expected: list[str]
) -> None:
    files = _bad_files(ca, tmp_path)
    env = {**BASE, **{name: str(files.get(value, value)) for name, value in variables.items()}}
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    for text in expected:
        assert text in str(caught.value)
    assert "BEGIN" not in str(caught.value), "no file content is ever quoted"


def test_every_bad_tls_variable_is_named_and_startup_exits_2(ca: LocalCa, tmp_path: Path) -> None:
    files = _bad_files(ca, tmp_path)
    bad = {
        "GATEWAY_TLS_CERT_FILE": str(files["garbage"]),
        "GATEWAY_TLS_KEY_FILE": "/nonexistent/tls.key",
        "GATEWAY_HTTP_REDIRECT_LISTEN": "everywhere",
        "GATEWAY_UPSTREAM_CA_FILE": str(files["garbage"]),
    }
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("COGNITO_", "GATEWAY_"))}
    result = subprocess.run(
        [sys.executable, "-m", "gateway"],
        cwd=ROOT,
        env={**clean, **BASE, **bad},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("cognito-gateway: invalid configuration:")
    for name in bad:
        assert f"{name}: " in result.stderr, name
    assert "Traceback" not in result.stderr
