"""gateway.oidc.verify: token times against the injected clock, and the token_use rules of a Cognito provider
versus a generic OIDC one. Tokens are signed for real; the key set is a stand-in for JwksCache's ``get``.

(The attacks on signatures, algorithms and claims against a real JWKS endpoint are in tests/test_gateway_tokens.py.)
"""

from __future__ import annotations

from typing import Any, cast

import jwt
import pytest

from dev_idp.keys import PoolKeys, SigningKey
from gateway.config import ProviderSettings
from gateway.errors import InvalidToken
from gateway.oidc.jwks import JwksCache
from gateway.oidc.verify import HEADER_CACHE_SIZE, TokenVerifier

from ..support import FakeClock
from .factories import provider_settings

ISSUER = "https://idp.example/pool"
NONCE = "nonce-of-this-sign-in"
SKEW = 60


class KeySet:
    """Stands in for ``JwksCache``: the IdP's public keys by kid."""

    def __init__(self, keys: PoolKeys) -> None:
        self._keys = {key.kid: jwt.PyJWK(key.public_jwk()) for key in (keys.id_token, keys.access_token)}

    async def get(self, kid: str) -> jwt.PyJWK:
        if kid not in self._keys:
            raise InvalidToken(f"no key with kid {kid!r}")
        return self._keys[kid]


@pytest.fixture
def jwks(pool_keys: PoolKeys) -> JwksCache:
    return cast(JwksCache, KeySet(pool_keys))


def verifier(clock: FakeClock, **changes: Any) -> TokenVerifier:
    settings: ProviderSettings = provider_settings(issuer=ISSUER, clock_skew=SKEW, **changes)
    return TokenVerifier(settings, clock)


def _signed(key: SigningKey, now: float, claims: dict[str, Any]) -> str:
    """The token ``key`` signs: the common claims at ``now``, then ``claims`` (a None value drops the claim)."""
    merged = {"sub": "sub-1", "iss": ISSUER, "iat": int(now), "exp": int(now) + 3600, **claims}
    payload = {k: v for k, v in merged.items() if v is not None}
    return jwt.encode(payload, key.private_key, algorithm="RS256", headers={"kid": key.kid})


def id_token(keys: PoolKeys, now: float, **changes: Any) -> str:
    return _signed(keys.id_token, now, {"aud": "gateway", "token_use": "id", "nonce": NONCE, **changes})


def access_token(keys: PoolKeys, now: float, **changes: Any) -> str:
    return _signed(keys.access_token, now, {"client_id": "gateway", "token_use": "access", **changes})


async def verify_id(
    v: TokenVerifier, jwks: JwksCache, token: str, *, nonce: str | None = NONCE, sub: str | None = None
) -> dict[str, Any]:
    return await v.verify_id_token(jwks, token, nonce=nonce, access_token="at", sub=sub)


# Times, by the injected clock ------------------------------------------------------------------------------------
async def test_a_token_is_valid_until_its_exp_plus_the_leeway(
    jwks: JwksCache, pool_keys: PoolKeys, clock: FakeClock
) -> None:
    token = id_token(pool_keys, clock(), exp=int(clock()) + 100)
    clock.advance(100 + SKEW - 1)
    assert (await verify_id(verifier(clock), jwks, token))["sub"] == "sub-1"


async def test_a_token_expires_at_exp_plus_the_leeway(jwks: JwksCache, pool_keys: PoolKeys, clock: FakeClock) -> None:
    token = id_token(pool_keys, clock(), exp=int(clock()) + 100)
    clock.advance(100 + SKEW)
    with pytest.raises(InvalidToken, match="the token has expired"):
        await verify_id(verifier(clock), jwks, token)


async def test_expiry_follows_the_injected_clock_not_the_wall_clock(
    jwks: JwksCache, pool_keys: PoolKeys, clock: FakeClock
) -> None:
    token = id_token(pool_keys, clock())  # valid for an hour by the wall clock
    clock.advance(2 * 3600)
    with pytest.raises(InvalidToken, match="expired"):
        await verify_id(verifier(clock), jwks, token)


async def test_a_token_from_the_injected_future_is_valid_there(
    jwks: JwksCache, pool_keys: PoolKeys, clock: FakeClock
) -> None:
    """Issued two hours ahead of the wall clock (as the fake clock says): PyJWT's own time checks would refuse it."""
    clock.advance(2 * 3600)
    assert (await verify_id(verifier(clock), jwks, id_token(pool_keys, clock())))["sub"] == "sub-1"


async def test_iat_within_the_leeway_ahead_is_tolerated(jwks: JwksCache, pool_keys: PoolKeys, clock: FakeClock) -> None:
    token = id_token(pool_keys, clock(), iat=int(clock()) + SKEW)
    assert (await verify_id(verifier(clock), jwks, token))["sub"] == "sub-1"


async def test_iat_beyond_the_leeway_ahead_is_refused(jwks: JwksCache, pool_keys: PoolKeys, clock: FakeClock) -> None:
    token = id_token(pool_keys, clock(), iat=int(clock()) + SKEW + 1)
    with pytest.raises(InvalidToken, match="iat is in the future"):
        await verify_id(verifier(clock), jwks, token)


async def test_a_token_is_refused_before_its_nbf(jwks: JwksCache, pool_keys: PoolKeys, clock: FakeClock) -> None:
    token = id_token(pool_keys, clock(), nbf=int(clock()) + SKEW + 30)
    with pytest.raises(InvalidToken, match=r"not valid yet \(nbf\)"):
        await verify_id(verifier(clock), jwks, token)


async def test_a_token_is_valid_once_its_nbf_comes(jwks: JwksCache, pool_keys: PoolKeys, clock: FakeClock) -> None:
    token = id_token(pool_keys, clock(), nbf=int(clock()) + SKEW + 30)
    clock.advance(30)
    assert (await verify_id(verifier(clock), jwks, token))["sub"] == "sub-1"


@pytest.mark.parametrize(
    ("claim", "value"), [("exp", "9999999999"), ("iat", True), ("nbf", "0"), ("auth_time", [1]), ("exp", None)]
)
async def test_times_must_be_json_numbers(
    jwks: JwksCache, pool_keys: PoolKeys, clock: FakeClock, claim: str, value: object
) -> None:
    token = id_token(pool_keys, clock(), **{claim: value})
    reason = 'missing the "exp" claim' if value is None else f"{claim} is not a number"
    with pytest.raises(InvalidToken, match=reason):
        await verify_id(verifier(clock), jwks, token)


# token_use: Cognito versus a generic OIDC provider ---------------------------------------------------------------
async def test_a_cognito_id_token_must_say_token_use_id(jwks: JwksCache, pool_keys: PoolKeys, clock: FakeClock) -> None:
    with pytest.raises(InvalidToken, match="token_use is not id"):
        await verify_id(verifier(clock), jwks, id_token(pool_keys, clock(), token_use="access"))


async def test_a_cognito_id_token_without_token_use_is_refused(
    jwks: JwksCache, pool_keys: PoolKeys, clock: FakeClock
) -> None:
    with pytest.raises(InvalidToken, match='missing the "token_use" claim'):
        await verify_id(verifier(clock), jwks, id_token(pool_keys, clock(), token_use=None))


@pytest.mark.parametrize("token_use", [None, "access", "anything"])
async def test_an_oidc_providers_id_token_needs_no_token_use(
    jwks: JwksCache, pool_keys: PoolKeys, clock: FakeClock, token_use: str | None
) -> None:
    """token_use is Cognito's claim; another provider's ID token is one by its audience and signature."""
    token = id_token(pool_keys, clock(), token_use=token_use)
    assert (await verify_id(verifier(clock, kind="oidc"), jwks, token))["sub"] == "sub-1"


async def test_a_cognito_access_token_passes(jwks: JwksCache, pool_keys: PoolKeys, clock: FakeClock) -> None:
    claims = await verifier(clock).verify_access_token(jwks, access_token(pool_keys, clock()))
    assert claims["client_id"] == "gateway"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [({"token_use": "id"}, "token_use is not access"), ({"client_id": "other-app"}, "issued to another client")],
    ids=["an-id-token", "another-clients"],
)
async def test_a_cognito_access_token_must_be_one_and_ours(
    jwks: JwksCache, pool_keys: PoolKeys, clock: FakeClock, changes: dict[str, str], reason: str
) -> None:
    with pytest.raises(InvalidToken, match=reason):
        await verifier(clock).verify_access_token(jwks, access_token(pool_keys, clock(), **changes))


async def test_bearer_tokens_are_checked_against_the_api_client_ids(
    jwks: JwksCache, pool_keys: PoolKeys, clock: FakeClock
) -> None:
    token = access_token(pool_keys, clock(), client_id="reports-app")
    v = verifier(clock)
    claims = await v.verify_access_token(jwks, token, client_ids=frozenset({"reports-app"}))
    assert claims["client_id"] == "reports-app"
    with pytest.raises(InvalidToken, match="another client"):
        await v.verify_access_token(jwks, token, client_ids=frozenset({"gateway-only"}))


async def test_access_tokens_expire_by_the_injected_clock_too(
    jwks: JwksCache, pool_keys: PoolKeys, clock: FakeClock
) -> None:
    token = access_token(pool_keys, clock())
    clock.advance(3600 + SKEW)
    with pytest.raises(InvalidToken, match="expired"):
        await verifier(clock).verify_access_token(jwks, token)


# Sign-in versus refresh ------------------------------------------------------------------------------------------
async def test_a_refreshed_id_token_must_be_about_the_sessions_user(
    jwks: JwksCache, pool_keys: PoolKeys, clock: FakeClock
) -> None:
    token = id_token(pool_keys, clock(), nonce=None)
    v = verifier(clock)
    assert (await verify_id(v, jwks, token, nonce=None, sub="sub-1"))["sub"] == "sub-1"
    with pytest.raises(InvalidToken, match="for another subject"):
        await verify_id(v, jwks, token, nonce=None, sub="sub-2")


async def test_a_sign_ins_id_token_must_carry_its_nonce(jwks: JwksCache, pool_keys: PoolKeys, clock: FakeClock) -> None:
    with pytest.raises(InvalidToken, match="nonce does not match"):
        await verify_id(verifier(clock), jwks, id_token(pool_keys, clock(), nonce=None))


# The header cache ------------------------------------------------------------------------------------------------
async def test_a_known_header_on_a_broken_or_forged_token_is_still_refused(
    jwks: JwksCache, pool_keys: PoolKeys, clock: FakeClock
) -> None:
    """The header is decoded once per distinct segment; every token is still verified whole by PyJWT."""
    v = verifier(clock)
    good = access_token(pool_keys, clock())
    assert (await v.verify_access_token(jwks, good))["client_id"] == "gateway"
    header, payload, signature = good.split(".")
    forged = access_token(pool_keys, clock(), client_id="gateway", sub="mallory").split(".")[1]
    for token in (f"{header}.{forged}.{signature}", f"{header}.{payload}.", f"{header}.!!!.{signature}", header):
        with pytest.raises(InvalidToken):
            await v.verify_access_token(jwks, token)


async def test_more_distinct_headers_than_the_cache_holds_each_verify_as_themselves(
    jwks: JwksCache, pool_keys: PoolKeys, clock: FakeClock
) -> None:
    v = verifier(clock)
    key = pool_keys.access_token
    for index in range(HEADER_CACHE_SIZE * 2):
        claims = {"client_id": "gateway", "token_use": "access", "sub": "s", "iss": ISSUER}
        times = {"iat": int(clock()), "exp": int(clock()) + 60}
        token = jwt.encode(
            {**claims, **times}, key.private_key, algorithm="RS256", headers={"kid": key.kid, "n": index}
        )
        assert (await v.verify_access_token(jwks, token))["sub"] == "s"
    unknown = jwt.encode({}, key.private_key, algorithm="RS256", headers={"kid": "not-a-key"}).split(".")[0]
    with pytest.raises(InvalidToken, match="no key with kid"):
        await v.verify_access_token(jwks, unknown + "." + token.split(".", 1)[1])
