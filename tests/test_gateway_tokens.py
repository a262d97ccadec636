"""Token verification against a real JWKS endpoint (dev_idp in-process) and against moto's Cognito tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization

from dev_idp.keys import PoolKeys, load_or_create_keys
from gateway.config import ProviderSettings
from gateway.errors import IdpUnavailable, InvalidToken, SignInFailed
from gateway.oidc.discovery import Endpoints
from gateway.oidc.jwks import JwksCache
from gateway.oidc.token_endpoint import TokenEndpoint
from gateway.oidc.verify import TokenVerifier

from .conftest import InProcessIdp
from .moto_pool import MotoPool, moto_pool
from .support import FakeClock

NONCE = "the-nonce-of-this-sign-in"


def settings_for(issuer: str, client_id: str = "gateway") -> ProviderSettings:
    return ProviderSettings(
        issuer=issuer,
        domain=None,
        client_id=client_id,
        client_secret=None,
        scopes=("openid",),
        algorithms=("RS256",),
        clock_skew=60,
        timeout=5,
    )


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def jwks(idp: InProcessIdp, http: aiohttp.ClientSession, clock: FakeClock) -> JwksCache:
    return JwksCache(http, f"{idp.issuer}/.well-known/jwks.json", timeout=5, clock=clock)


def at_hash(token: str) -> str:
    digest = hashlib.sha256(token.encode()).digest()
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()


def sign(keys: PoolKeys, claims: dict[str, Any], *, which: str = "id", **header: Any) -> str:
    key = keys.id_token if which == "id" else keys.access_token
    return jwt.encode(claims, key.private_key, algorithm="RS256", headers={"kid": key.kid, **header})


def id_claims(idp: InProcessIdp, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "sub": "u-1",
        "iss": idp.issuer,
        "aud": "gateway",
        "token_use": "id",
        "iat": now,
        "exp": now + 3600,
        "nonce": NONCE,
        "cognito:username": "alice",
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def access_claims(idp: InProcessIdp, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "sub": "u-1",
        "iss": idp.issuer,
        "client_id": "gateway",
        "token_use": "access",
        "iat": now,
        "exp": now + 3600,
        "scope": "openid",
        "username": "alice",
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


async def test_valid_tokens_pass(idp: InProcessIdp, jwks: JwksCache) -> None:
    verifier = TokenVerifier(settings_for(idp.issuer))
    access = sign(idp.pool.keys, access_claims(idp), which="access")
    token = sign(idp.pool.keys, id_claims(idp, at_hash=at_hash(access)))
    assert (await verifier.verify_id_token(jwks, token, nonce=NONCE, access_token=access))["sub"] == "u-1"
    assert (await verifier.verify_access_token(jwks, access))["username"] == "alice"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _none_token(claims: dict[str, Any]) -> str:
    return f"{b64(json.dumps({'alg': 'none', 'kid': 'x'}).encode())}.{b64(json.dumps(claims).encode())}."


def _hs256_with_public_key(keys: PoolKeys, claims: dict[str, Any]) -> str:
    public_pem = keys.id_token.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "kid": keys.id_token.kid, "typ": "JWT"}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


@pytest.fixture(scope="module")
def foreign_keys() -> PoolKeys:
    """Keys that are not the IdP's (another pool's, or an attacker's)."""
    return load_or_create_keys(None)


def _foreign_key_with_the_idps_kid(idp: InProcessIdp, foreign: PoolKeys) -> str:
    """The IdP's kid, so the lookup finds the IdP's key and only the signature check can refuse it."""
    claims = id_claims(idp)
    return jwt.encode(
        claims, foreign.id_token.private_key, algorithm="RS256", headers={"kid": idp.pool.keys.id_token.kid}
    )


# Each bad token, and the reason (InvalidToken's message) it must be refused for: a token refused for another
# reason than its own would pass the check it is meant to exercise.
BAD_ID_TOKENS = [
    (lambda idp, _: _none_token(id_claims(idp)), "algorithm 'none' is not allowed"),
    (lambda idp, _: _hs256_with_public_key(idp.pool.keys, id_claims(idp)), "algorithm 'HS256' is not allowed"),
    (lambda idp, _: sign(idp.pool.keys, id_claims(idp, exp=int(time.time()) - 120)), "the token has expired"),
    (lambda idp, _: sign(idp.pool.keys, id_claims(idp, exp=None)), 'missing the "exp" claim'),
    (lambda idp, _: sign(idp.pool.keys, id_claims(idp, exp="9999999999")), "exp is not a number"),
    (lambda idp, _: sign(idp.pool.keys, id_claims(idp, iat=int(time.time()) + 3600)), "iat is in the future"),
    (lambda idp, _: sign(idp.pool.keys, id_claims(idp, iss="https://evil.example/pool")), "InvalidIssuerError"),
    (lambda idp, _: sign(idp.pool.keys, id_claims(idp, aud="another-client")), "InvalidAudienceError"),
    (lambda idp, _: sign(idp.pool.keys, id_claims(idp, aud=None)), 'missing the "aud" claim'),
    (lambda idp, _: sign(idp.pool.keys, id_claims(idp, token_use="access")), "token_use is not id"),
    (lambda idp, _: sign(idp.pool.keys, id_claims(idp, nonce="another-sign-in")), "nonce does not match"),
    (lambda idp, _: sign(idp.pool.keys, id_claims(idp, nonce=None)), "nonce does not match"),
    (lambda idp, _: sign(idp.pool.keys, id_claims(idp, at_hash="AAAAAAAAAAAAAAAAAAAAAA")), "at_hash does not match"),
    (_foreign_key_with_the_idps_kid, "InvalidSignatureError: Signature verification failed"),
    (lambda idp, foreign: sign(foreign, id_claims(idp)), "no key with kid"),
    (lambda idp, _: sign(idp.pool.keys, id_claims(idp), kid="unknown-kid"), "no key with kid 'unknown-kid'"),
    (lambda idp, _: "not.a.jwt", "malformed token"),
    (lambda idp, _: "", "malformed token"),
    (lambda idp, _: sign(idp.pool.keys, id_claims(idp, aud=["gateway", "another-client"])), "no azp"),
    (lambda idp, _: sign(idp.pool.keys, id_claims(idp, azp="another-client")), "issued to another party"),
    (
        lambda idp, _: sign(idp.pool.keys, id_claims(idp, aud=["gateway", "api"], azp="another-client")),
        "issued to another party",
    ),
    (lambda idp, _: sign(idp.pool.keys, id_claims(idp, exp=1e300)), "exceeds GATEWAY_MAX_TOKEN_LIFETIME"),
    (
        lambda idp, _: sign(idp.pool.keys, id_claims(idp, exp=int(time.time()) + 10 * 86400)),
        "exceeds GATEWAY_MAX_TOKEN_LIFETIME",
    ),
    (
        lambda idp, _: sign(idp.pool.keys, id_claims(idp, iat=int(time.time()) - 2 * 86400)),
        "exceeds GATEWAY_MAX_TOKEN_LIFETIME",
    ),
]
BAD_ID_TOKEN_IDS = [
    "alg none",
    "HS256 signed with the RSA public key",
    "expired beyond leeway",
    "no exp",
    "string exp",
    "iat in the future",
    "other issuer",
    "other audience",
    "no audience",
    "token_use access as ID",
    "nonce mismatch",
    "no nonce",
    "at_hash mismatch",
    "signed by a key that is not the IdP's, under the IdP's kid",
    "signed by a key that is not the IdP's, under its own kid",
    "unknown kid",
    "garbage",
    "empty",
    "other aud, no azp",
    "issued to another party",
    "other aud, azp another party",
    "exp of 1e300",
    "exp in ten days",
    "a lifetime of two days",
]


@pytest.mark.parametrize(("make", "reason"), BAD_ID_TOKENS, ids=BAD_ID_TOKEN_IDS)
async def test_bad_id_tokens_are_refused_for_their_reason(
    idp: InProcessIdp, jwks: JwksCache, foreign_keys: PoolKeys, make, reason: str
) -> None:
    verifier = TokenVerifier(settings_for(idp.issuer))
    access = sign(idp.pool.keys, access_claims(idp), which="access")
    with pytest.raises(InvalidToken, match=re.escape(reason)):
        await verifier.verify_id_token(jwks, make(idp, foreign_keys), nonce=NONCE, access_token=access)


async def test_other_audiences_are_accepted_when_azp_is_this_client(idp: InProcessIdp, jwks: JwksCache) -> None:
    """OIDC Core 3.1.3.7 steps 4-5, as providers such as Zitadel issue them (aud: the client and its project)."""
    token = sign(idp.pool.keys, id_claims(idp, aud=["gateway", "project-1"], azp="gateway"))
    claims = await TokenVerifier(settings_for(idp.issuer)).verify_id_token(jwks, token, nonce=NONCE, access_token="x")
    assert claims["azp"] == "gateway"


async def test_small_clock_skew_is_tolerated(idp: InProcessIdp, jwks: JwksCache) -> None:
    """Cognito's iat can be a second ahead of ours; exp a little behind still passes within the leeway."""
    now = int(time.time())
    token = sign(idp.pool.keys, id_claims(idp, iat=now + 2, exp=now - 10))
    claims = await TokenVerifier(settings_for(idp.issuer)).verify_id_token(jwks, token, nonce=NONCE, access_token="x")
    assert claims["sub"] == "u-1"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"client_id": "another-client"}, "access token was issued to another client"),
        ({"token_use": "id"}, "token_use is not access"),
        ({"client_id": None}, 'missing the "client_id" claim'),
        ({"exp": None}, 'missing the "exp" claim'),
    ],
)
async def test_bad_access_tokens_are_refused_for_their_reason(
    idp: InProcessIdp, jwks: JwksCache, changes: dict, reason: str
) -> None:
    token = sign(idp.pool.keys, access_claims(idp, **changes), which="access")
    with pytest.raises(InvalidToken, match=re.escape(reason)):
        await TokenVerifier(settings_for(idp.issuer)).verify_access_token(jwks, token)


async def test_an_id_token_is_never_an_access_token(idp: InProcessIdp, jwks: JwksCache) -> None:
    with pytest.raises(InvalidToken, match=r"token_use|client_id"):
        await TokenVerifier(settings_for(idp.issuer)).verify_access_token(jwks, sign(idp.pool.keys, id_claims(idp)))


async def test_unknown_kid_refetches_once_and_is_rate_limited(
    idp: InProcessIdp, jwks: JwksCache, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    fetches = 0
    original = JwksCache.refresh

    async def counting(self: JwksCache) -> None:
        nonlocal fetches
        fetches += 1
        await original(self)

    monkeypatch.setattr(JwksCache, "refresh", counting)
    verifier = TokenVerifier(settings_for(idp.issuer))
    await verifier.verify_id_token(jwks, sign(idp.pool.keys, id_claims(idp)), nonce=NONCE, access_token="x")
    assert fetches == 1
    for _ in range(20):  # a flood of made-up kids
        with pytest.raises(InvalidToken):
            await verifier.verify_id_token(
                jwks, sign(idp.pool.keys, id_claims(idp), kid=f"kid-{_}"), nonce=NONCE, access_token="x"
            )
    assert fetches == 1, "no refetch within 30 s of the last one"

    # The IdP rotates its keys; once the interval has passed, the new kid triggers one refetch and verifies.
    idp.pool.keys = load_or_create_keys(None)
    clock.advance(31)
    token = sign(idp.pool.keys, id_claims(idp))
    assert (await verifier.verify_id_token(jwks, token, nonce=NONCE, access_token="x"))["sub"] == "u-1"
    assert fetches == 2


async def test_jwks_outage_is_idp_unavailable(http: aiohttp.ClientSession) -> None:
    with pytest.raises(IdpUnavailable):
        await JwksCache(http, "http://127.0.0.1:9/jwks.json", timeout=1).refresh()


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoPool]:
    with moto_pool() as pool:
        yield pool


async def test_moto_issued_tokens_verify_with_the_issuer_pointed_at_moto(
    moto: MotoPool, http: aiohttp.ClientSession
) -> None:
    """An independent Cognito model: its tokens pass every check the gateway makes, except the nonce, which
    moto's API-issued tokens cannot carry (only the hosted-UI code flow sets one)."""
    jwks = JwksCache(http, moto.jwks_url, timeout=5)
    verifier = TokenVerifier(settings_for(moto.issuer, moto.client_id))
    access = await verifier.verify_access_token(jwks, moto.access_token)
    assert access["username"] == "alice" and access["token_use"] == "access"
    with pytest.raises(InvalidToken, match="nonce"):
        await verifier.verify_id_token(jwks, moto.id_token, nonce=NONCE, access_token=moto.access_token)
    with pytest.raises(InvalidToken, match=r"token_use|client_id"):
        await verifier.verify_access_token(jwks, moto.id_token)
    with pytest.raises(InvalidToken, match="another client"):
        await TokenVerifier(settings_for(moto.issuer, "some-other-client")).verify_access_token(jwks, moto.access_token)
    with pytest.raises(InvalidToken):
        await TokenVerifier(
            settings_for("https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_other")
        ).verify_access_token(jwks, moto.access_token)


@pytest.mark.parametrize("token_type", ["mac", "DPoP", None, 7])
async def test_a_token_response_of_another_type_is_a_failed_sign_in(
    http: aiohttp.ClientSession, aiohttp_server: Any, token_type: object
) -> None:
    """OIDC Core 3.1.3.3: token_type must be Bearer (case-insensitive); anything else is a failed sign-in."""
    body = {"access_token": "a", "id_token": "x.y.z", "expires_in": 60, "token_type": token_type}

    async def token(_: web.Request) -> web.Response:
        return web.json_response({k: v for k, v in body.items() if v is not None})

    app = web.Application()
    app.router.add_post("/token", token)
    server = await aiohttp_server(app)
    endpoints = Endpoints(str(server.make_url("/authorize")), str(server.make_url("/token")), "", None, None, None)
    with pytest.raises(SignInFailed) as refused:
        await TokenEndpoint(http, settings_for("https://idp.example")).exchange_code(
            endpoints, code="c", verifier="v", redirect_uri="https://app.example/cb"
        )
    assert refused.value.code == "invalid_token_type"
    body["token_type"] = "bEaReR"
    tokens = await TokenEndpoint(http, settings_for("https://idp.example")).exchange_code(
        endpoints, code="c", verifier="v", redirect_uri="https://app.example/cb"
    )
    assert tokens.access_token == "a"
