"""The signed identity header ``x-amzn-oidc-data``, checked by what apps written for an AWS ALB check it with.

One stack (dev_idp, upstream_demo, gateway) runs with the defaults, and next to it AWS's own verifier
(aws-jwt-verify's ``AlbJwtVerifier``, ``tests/alb_verify.py``) configured as such an app is: the default ALB ARN, the
issuer, the client id and the gateway's key endpoint. The tests have it accept the gateway's header and refuse a
tampered, an expired and a foreign one; they run AWS's Python example (``base64.b64decode`` of the header, the PEM from
``{key endpoint}/{kid}``, PyJWT with ES256); and they start more gateways beside the stack (rotated secrets, an
explicit GATEWAY_SIGNING_KEY, the header turned off) that share its dev_idp and upstream_demo, with forged session
cookies (``stack.forged_cookie``) so no sign-in is needed.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import re
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.config import DEFAULT_SIGNER_ARN, Settings
from gateway.identity import Identity
from gateway.signed_identity import IdentitySigner
from gateway.signing_keys import SigningKeys, derived_private_key
from gateway.user_session import UserSession

from .alb_verify import AlbVerifier, start_alb_verifier
from .stack import SESSION_SECRET, Stack, browse_and_sign_in, forged_cookie, start_gateway
from .support import ROOT, CapturedProcess, free_port, new_browser

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
PUBLIC = "/api/echo/public/"
ALICE = Identity(
    sub="5d7d6159-104c-4531-a613-4461a0ada9f1",
    username="alice",
    email="alice@example.com",
    email_verified=True,
    groups=("admins",),
    display_name="Alice Liddell",
)


@pytest.fixture(scope="module")
def signed_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = Stack.start(tmp_path_factory.mktemp("signed"), gateway_env={"GATEWAY_PUBLIC_PATHS": PUBLIC})
    yield running
    running.stop()


def _verifier_for(stack_env: Mapping[str, str], gateway_url: str) -> AlbVerifier:
    return start_alb_verifier(
        alb_arn=DEFAULT_SIGNER_ARN,
        issuer=stack_env["COGNITO_ISSUER"],
        client_id=stack_env["COGNITO_CLIENT_ID"],
        keys_url=f"{gateway_url}/oauth2/keys",
    )


@pytest.fixture(scope="module")
def verifier(signed_stack: Stack) -> Iterator[AlbVerifier]:
    running = _verifier_for(signed_stack.env, signed_stack.url)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def alice(signed_stack: Stack) -> dict[str, str]:
    """alice's cookies after a real sign-in through the hosted-UI form."""

    async def sign_in() -> dict[str, str]:
        async with new_browser() as browser:
            landed = await browse_and_sign_in(browser, f"{signed_stack.url}/")
            assert landed.status == 200
            return {c.key: c.value for c in browser.cookie_jar if c.key.startswith("_cognito_gateway")}

    return asyncio.run(sign_in())


def forged(env: Mapping[str, str], identity: Identity = ALICE) -> dict[str, str]:
    now = int(time.time())
    session = UserSession(identity=identity, created_at=now, auth_time=now, token_expires_at=now + 3600, last_seen=now)
    return forged_cookie(env, session)


async def received(
    url: str, cookies: Mapping[str, str] | None = None, headers: Any = None, path: str = "/api/whoami"
) -> list[tuple[str, str]]:
    """The headers upstream_demo received for ``path`` (its whoami/echo answer), names lower-cased."""
    async with aiohttp.ClientSession(cookies=cookies) as client, client.get(f"{url}{path}", headers=headers) as r:
        assert r.status == 200, (r.status, await r.text())
        return [(name.lower(), value) for name, value in (await r.json())["headers"]]


def one(headers: list[tuple[str, str]], name: str) -> str:
    values = [value for key, value in headers if key == name]
    assert len(values) == 1, (name, headers)
    return values[0]


def segments(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header, payload, _ = token.split(".")
    return json.loads(base64.urlsafe_b64decode(header)), json.loads(base64.urlsafe_b64decode(payload))


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def stack_signer(env: Mapping[str, str]) -> IdentitySigner:
    """A signer with the keys the stack's gateway derives from its session secret: what minting a token takes."""
    settings = Settings.from_env(env)
    return IdentitySigner(
        SigningKeys.from_secrets(settings.session.keys),
        signer_arn=DEFAULT_SIGNER_ARN,
        issuer=settings.provider.issuer,
        client_id=settings.provider.client_id,
    )


# aws-jwt-verify --------------------------------------------------------------------------------------------------
async def test_aws_jwt_verify_accepts_the_gateways_header(
    signed_stack: Stack, verifier: AlbVerifier, alice: dict[str, str]
) -> None:
    seen = await received(signed_stack.url, alice)
    token = one(seen, "x-amzn-oidc-data")
    verdict = await verifier.verify(token)
    assert verdict["valid"], verdict
    payload = verdict["payload"]
    assert payload["sub"] == one(seen, "x-amzn-oidc-identity")
    assert payload["username"] == "alice" == one(seen, "x-forwarded-user")
    assert payload["email"] == "alice@example.com" and payload["email_verified"] == "true"
    assert payload["cognito:groups"] == ["admins"] and payload["name"] == "Alice Liddell"
    assert payload["iss"] == signed_stack.env["COGNITO_ISSUER"]
    assert 100 <= payload["exp"] - time.time() <= 121, "about two minutes, and not yet due for renewal"
    fetched = verifier.key_fetches()
    assert f"fetch {signed_stack.url}/oauth2/keys/{segments(token)[0]['kid']} 200" in fetched, fetched
    assert len(fetched) == len(set(fetched)), "the verifier caches the PEM by kid, as it does an ALB's"
    assert not {"x-amzn-oidc-accesstoken", "x-forwarded-access-token"} & {name for name, _ in seen}, (
        "access tokens only with GATEWAY_PASS_ACCESS_TOKEN"
    )


async def test_aws_jwt_verify_refuses_a_tampered_header(
    signed_stack: Stack, verifier: AlbVerifier, alice: dict[str, str]
) -> None:
    token = one(await received(signed_stack.url, alice), "x-amzn-oidc-data")
    header, payload, signature = token.split(".")
    claims = segments(token)[1]
    promoted = f"{header}.{_b64({**claims, 'cognito:groups': ['admins', 'root']})}.{signature}"
    other_user = f"{header}.{_b64({**claims, 'username': 'mallory'})}.{signature}"
    flipped = f"{header}.{payload}.{signature[:10]}{'A' if signature[10] != 'A' else 'B'}{signature[11:]}"
    for forged_token in (promoted, other_user, flipped):
        verdict = await verifier.verify(forged_token)
        assert verdict == {"valid": False, "error": "JwtInvalidSignatureError", "message": verdict["message"]}


async def test_aws_jwt_verify_refuses_an_expired_header(signed_stack: Stack, verifier: AlbVerifier) -> None:
    # Signed with the very key the gateway uses (derived from the same secret), ten minutes ago.
    stale, exp = stack_signer(signed_stack.env).sign(ALICE, now=time.time() - 600)
    assert exp < time.time()
    verdict = await verifier.verify(stale)
    assert not verdict["valid"] and verdict["error"] == "JwtExpiredError", verdict
    fresh, _ = stack_signer(signed_stack.env).sign(ALICE, now=time.time())
    assert (await verifier.verify(fresh))["valid"], "the control: the same key, now"


async def test_aws_jwt_verify_refuses_another_signer_and_another_client(
    signed_stack: Stack, verifier: AlbVerifier, alice: dict[str, str]
) -> None:
    token = one(await received(signed_stack.url, alice), "x-amzn-oidc-data")
    other_alb = "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/other/50dc6c495c0c9188"
    verdict = await verifier.verify(token, albArn=other_alb)
    assert not verdict["valid"] and verdict["error"] == "AlbJwtInvalidSignerError", verdict
    verdict = await verifier.verify(token, clientId="another-client")
    assert not verdict["valid"] and verdict["error"] == "AlbJwtInvalidClientIdError", verdict


# AWS's Python example, and the format ---------------------------------------------------------------------------
def awss_python_example(encoded_jwt: str, key_endpoint: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ALB user guide's Python steps, verbatim apart from the key endpoint; returns the header and payload."""
    jwt_headers = encoded_jwt.split(".")[0]
    decoded_jwt_headers = base64.b64decode(jwt_headers)
    decoded_json = json.loads(decoded_jwt_headers)
    kid = decoded_json["kid"]
    with urllib.request.urlopen(f"{key_endpoint}/{kid}") as req:
        pub_key = req.read().decode()
    payload = jwt.decode(encoded_jwt, pub_key, algorithms=["ES256"])
    return decoded_json, payload


async def test_pyjwt_as_in_awss_python_example(signed_stack: Stack, alice: dict[str, str]) -> None:
    encoded_jwt = one(await received(signed_stack.url, alice), "x-amzn-oidc-data")
    decoded_json, payload = await asyncio.to_thread(awss_python_example, encoded_jwt, f"{signed_stack.url}/oauth2/keys")
    kid = decoded_json["kid"]
    assert payload["username"] == "alice" and payload["iss"] == signed_stack.env["COGNITO_ISSUER"]
    # And the header carries what an ALB's does.
    assert decoded_json == {
        "typ": "JWT",
        "alg": "ES256",
        "kid": kid,
        "signer": DEFAULT_SIGNER_ARN,
        "iss": signed_stack.env["COGNITO_ISSUER"],
        "client": signed_stack.env["COGNITO_CLIENT_ID"],
        "exp": payload["exp"],
    }
    assert UUID.match(kid)
    assert "=" not in encoded_jwt, "no padding: strict JWS parsers read it (ALB's padding quirk avoided)"
    for segment in encoded_jwt.split(".")[:2]:
        assert base64.b64decode(segment, validate=True) == base64.urlsafe_b64decode(segment)


async def test_the_key_is_derived_from_the_session_secret(signed_stack: Stack, alice: dict[str, str]) -> None:
    token = one(await received(signed_stack.url, alice), "x-amzn-oidc-data")
    expected = SigningKeys.from_secrets(Settings.from_env(signed_stack.env).session.keys)
    assert segments(token)[0]["kid"] == expected.current.kid, "any replica with the secret has the same key"


async def test_one_signed_header_serves_a_session_until_it_nears_expiry(signed_stack: Stack) -> None:
    cookies = forged(signed_stack.env, dataclasses.replace(ALICE, username="alice-reuse"))
    first = one(await received(signed_stack.url, cookies), "x-amzn-oidc-data")
    second = one(await received(signed_stack.url, cookies), "x-amzn-oidc-data")
    assert first == second, "not signed per request"
    other = one(await received(signed_stack.url, forged(signed_stack.env)), "x-amzn-oidc-data")
    assert segments(other)[1]["username"] == "alice" and other != first


async def test_upstream_demo_shows_signature_verified(signed_stack: Stack, alice: dict[str, str]) -> None:
    async with aiohttp.ClientSession(cookies=alice) as client:
        async with client.get(f"{signed_stack.url}/") as response:
            page = await response.text()
        async with client.get(f"{signed_stack.url}/api/whoami") as response:
            body = await response.json()
    assert "Hello, <b id=user>alice</b>" in page
    assert "x-amzn-oidc-data: <b>signature verified</b> (signed for <b>alice</b>)" in page
    assert body["signed"] == "verified"
    token = next(value for name, value in body["headers"] if name.lower() == "x-amzn-oidc-data")
    header, _, signature = token.split(".")
    tampered = f"{header}.{_b64({**segments(token)[1], 'username': 'mallory'})}.{signature}"
    # Straight to upstream_demo, past the gateway, as an attacker on its network would.
    async with aiohttp.ClientSession() as client:
        async with client.get(f"{signed_stack.upstream_url}/api/whoami", headers={"X-Amzn-Oidc-Data": tampered}) as r:
            assert (await r.json())["signed"] == "invalid: InvalidSignatureError"
        async with client.get(f"{signed_stack.upstream_url}/api/whoami") as r:
            assert (await r.json())["signed"] == "absent"


# What clients send, and the key endpoints -----------------------------------------------------------------------
async def test_a_client_sent_signed_header_never_reaches_the_upstream(
    signed_stack: Stack, alice: dict[str, str], verifier: AlbVerifier
) -> None:
    # A genuinely signed header for someone else (one a client copied from elsewhere) is dropped like any other.
    copied, _ = stack_signer(signed_stack.env).sign(dataclasses.replace(ALICE, username="mallory"), now=time.time())
    sent = [
        ("X-Amzn-Oidc-Data", copied),
        ("x_amzn_oidc_data", copied),
        ("X-Amzn-Oidc-Identity", "mallory"),
        ("X-Amzn-Oidc-Accesstoken", "mallory"),
    ]
    seen = await received(signed_stack.url, alice, headers=sent)
    token = one(seen, "x-amzn-oidc-data")
    assert token != copied and segments(token)[1]["username"] == "alice"
    assert not any("mallory" in value or value == copied for _, value in seen)
    anonymous = await received(signed_stack.url, headers=sent, path=f"{PUBLIC}x")
    assert not any(name.startswith("x-amzn-oidc") or name.startswith("x_amzn") for name, _ in anonymous), anonymous


async def test_key_endpoints_need_no_session(signed_stack: Stack, alice: dict[str, str]) -> None:
    token = one(await received(signed_stack.url, alice), "x-amzn-oidc-data")
    kid = segments(token)[0]["kid"]
    async with aiohttp.ClientSession() as client:
        async with client.get(f"{signed_stack.url}/oauth2/keys/{kid}") as response:
            assert response.status == 200 and response.content_type == "text/plain"
            pem = await response.read()
        async with client.get(f"{signed_stack.url}/oauth2/jwks.json") as response:
            assert response.status == 200
            jwks = await response.json()
        for missing in ("00000000-0000-4000-8000-000000000000", "not-a-uuid", kid.upper(), f"{kid}x"):
            async with client.get(f"{signed_stack.url}/oauth2/keys/{missing}", headers={"Accept": "*/*"}) as r:
                assert r.status == 404, missing
    public = serialization.load_pem_public_key(pem)
    assert isinstance(public, ec.EllipticCurvePublicKey) and isinstance(public.curve, ec.SECP256R1)
    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----\n")
    [jwk] = jwks["keys"]
    assert {jwk[k] for k in ("kid", "alg", "use", "kty", "crv")} == {kid, "ES256", "sig", "EC", "P-256"}
    assert jwt.decode(token, jwt.PyJWK(jwk), algorithms=["ES256"])["username"] == "alice"


# Beside the stack: rotation, an explicit key, the header off -----------------------------------------------------
def _gateway_beside(stack: Stack, **env: str) -> tuple[CapturedProcess, str, dict[str, str]]:
    """Another gateway on the stack's dev_idp and upstream_demo, with ``env`` on top of the stack's."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    full = {**stack.env, "GATEWAY_LISTEN": f"127.0.0.1:{port}", "GATEWAY_PUBLIC_URL": url, **env}
    return start_gateway(full), url, full


async def test_rotation_publishes_every_secrets_key_and_signs_with_the_first(
    signed_stack: Stack, verifier: AlbVerifier, alice: dict[str, str]
) -> None:
    new_secret = base64.b64encode(secrets.token_bytes(32)).decode()
    gateway, url, env = _gateway_beside(signed_stack, GATEWAY_SESSION_SECRET=f"{new_secret},{SESSION_SECRET}")
    rotated = _verifier_for(env, url)
    try:
        async with aiohttp.ClientSession() as client, client.get(f"{url}/oauth2/jwks.json") as response:
            kids = [key["kid"] for key in (await response.json())["keys"]]
        old_kid = SigningKeys.from_secrets([base64.b64decode(SESSION_SECRET)]).current.kid
        new_kid = SigningKeys([derived_private_key(base64.b64decode(new_secret))]).current.kid
        assert kids == [new_kid, old_kid]
        token = one(await received(url, forged(env)), "x-amzn-oidc-data")
        assert segments(token)[0]["kid"] == new_kid
        assert (await rotated.verify(token))["valid"]
        from_before = one(await received(signed_stack.url, alice), "x-amzn-oidc-data")
        assert segments(from_before)[0]["kid"] == old_kid
        assert (await rotated.verify(from_before))["valid"], "a header signed before the rotation still verifies"
    finally:
        rotated.stop()
        gateway.stop()


def _pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


async def test_gateway_signing_key_replaces_the_derived_keys(signed_stack: Stack) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    # One line, as an env file or a Kubernetes secret literal holds it.
    gateway, url, env = _gateway_beside(signed_stack, GATEWAY_SIGNING_KEY=_pem(key).replace("\n", "\\n"))
    explicit = _verifier_for(env, url)
    try:
        async with aiohttp.ClientSession() as client, client.get(f"{url}/oauth2/jwks.json") as response:
            [jwk] = (await response.json())["keys"]
        assert jwk["kid"] == SigningKeys([key]).current.kid
        token = one(await received(url, forged(env)), "x-amzn-oidc-data")
        assert segments(token)[0]["kid"] == jwk["kid"] and (await explicit.verify(token))["valid"]
        assert "BEGIN" not in gateway.output()
    finally:
        explicit.stop()
        gateway.stop()


async def test_the_signed_header_can_be_turned_off(signed_stack: Stack) -> None:
    gateway, url, env = _gateway_beside(signed_stack, GATEWAY_SIGNED_HEADER="false")
    try:
        seen = await received(url, forged(env), headers={"X-Amzn-Oidc-Data": "from-the-client"})
        names = [name for name, _ in seen]
        assert "x-amzn-oidc-data" not in names, "off, and the client's copy is still removed"
        assert one(seen, "x-amzn-oidc-identity") == ALICE.sub and one(seen, "x-forwarded-user") == "alice"
    finally:
        gateway.stop()


# Configuration ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GATEWAY_SIGNER_ARN": "arn:aws:iam::123456789012:role/x"}, "GATEWAY_SIGNER_ARN: 'arn:aws:iam::"),
        ({"GATEWAY_SIGNER_ARN": "my-alb"}, "is not an ALB ARN like arn:aws:elasticloadbalancing:"),
        ({"GATEWAY_SIGNING_KEY": "not a key"}, "GATEWAY_SIGNING_KEY: holds no PEM private key"),
        (
            {"GATEWAY_SIGNING_KEY": _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))},
            "GATEWAY_SIGNING_KEY: key 1 is not an EC P-256 key",
        ),
        (
            {"GATEWAY_SIGNING_KEY": _pem(ec.generate_private_key(ec.SECP384R1()))},
            "GATEWAY_SIGNING_KEY: key 1 is not an EC P-256 key",
        ),
        (
            {"GATEWAY_IDENTITY_HEADERS": "remote", "GATEWAY_SIGNED_HEADER": "true"},
            "GATEWAY_SIGNED_HEADER: x-amzn-oidc-data is sent with the alb family only",
        ),
        ({"GATEWAY_IDENTITY_HEADERS": "alb,authelia"}, "GATEWAY_IDENTITY_HEADERS: 'authelia' not known"),
        ({"GATEWAY_PASS_ACCESS_TOKEN": "maybe"}, "GATEWAY_PASS_ACCESS_TOKEN: 'maybe' is not true or false"),
    ],
)
def test_bad_settings_exit_2_naming_the_variable(env: dict[str, str], message: str) -> None:
    base = {
        "COGNITO_USER_POOL_ID": "eu-west-1_AbC123xyz",
        "COGNITO_CLIENT_ID": "4hpg5n34kduiedr7taqipdo77h",
        "GATEWAY_UPSTREAM": "http://app:5000",
        "GATEWAY_PUBLIC_URL": "https://app.example.com",
        "GATEWAY_SESSION_SECRET": SESSION_SECRET,
    }
    result = subprocess.run(
        [sys.executable, "-m", "gateway"], env={**base, **env}, cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2, result
    assert message in result.stderr, result.stderr
    body = [line for line in env.get("GATEWAY_SIGNING_KEY", "").splitlines() if "-----" not in line]
    assert not any(line in result.stderr for line in body), "a key is never quoted back"


def test_settings_defaults_and_a_valid_arn() -> None:
    base = {
        "COGNITO_USER_POOL_ID": "eu-west-1_AbC123xyz",
        "COGNITO_CLIENT_ID": "4hpg5n34kduiedr7taqipdo77h",
        "GATEWAY_UPSTREAM": "http://app:5000",
        "GATEWAY_PUBLIC_URL": "https://app.example.com",
        "GATEWAY_SESSION_SECRET": SESSION_SECRET,
    }
    defaults = Settings.from_env(base).identity_headers
    assert defaults.families == {"oauth2-proxy", "alb"} and defaults.signed and not defaults.pass_access_token
    assert defaults.signer_arn == DEFAULT_SIGNER_ARN and defaults.signing_key is None
    arn = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/my-app/50dc6c495c0c9188"
    key = _pem(ec.generate_private_key(ec.SECP256R1()))
    chosen = Settings.from_env(
        {**base, "GATEWAY_SIGNER_ARN": arn, "GATEWAY_IDENTITY_HEADERS": "Remote, grafana", "GATEWAY_SIGNING_KEY": key}
    )
    assert chosen.identity_headers.signer_arn == arn and chosen.identity_headers.families == {"remote", "grafana"}
    assert "PRIVATE" not in repr(chosen)
