"""dev_idp's tokens against moto's: the same claim names with the same JSON types, except where we follow real
Cognito on purpose and moto does not. Each deliberate difference is listed here with its reason (and in the README).
"""

from __future__ import annotations

from collections.abc import Iterator

import aiohttp
import jwt
import pytest

from .conftest import InProcessIdp
from .moto_pool import MotoPool, moto_pool
from .support import AuthorizeAttempt, jwt_segments
from .test_dev_idp_flow import exchange, sign_in

# claim -> why dev_idp differs from moto (both are checked against real Cognito in ../shared/reference/cognito.md)
DELIBERATE = {
    "email_verified": "real ID tokens carry a boolean; moto copies the attribute's string 'true'",
}
# Header members: real Cognito sends {"kid", "alg"}; moto adds "typ".
MOTO_ONLY_HEADER = {"typ"}
# Claims real Cognito has that moto lacks (managed-login code flow): we keep them.
DEV_IDP_EXTRAS_ID = {"at_hash", "event_id", "nonce", "email", "name", "preferred_username"}
DEV_IDP_EXTRAS_ACCESS = {"event_id", "version"}


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoPool]:
    with moto_pool() as pool:
        yield pool


async def dev_idp_tokens(idp: InProcessIdp, browser: aiohttp.ClientSession) -> dict[str, str]:
    attempt = AuthorizeAttempt.new()
    code = await sign_in(browser, idp, attempt)
    return await (await exchange(browser, idp, code, attempt.verifier)).json()


def shape(claims: dict) -> dict[str, str]:
    return {name: type(value).__name__ for name, value in claims.items()}


@pytest.mark.parametrize(("kind", "extras"), [("id", DEV_IDP_EXTRAS_ID), ("access", DEV_IDP_EXTRAS_ACCESS)])
async def test_claim_names_and_types_match_moto(
    idp: InProcessIdp, browser: aiohttp.ClientSession, moto: MotoPool, kind: str, extras: set[str]
) -> None:
    ours = await dev_idp_tokens(idp, browser)
    our_header, our_claims, _ = jwt_segments(ours[f"{kind}_token"])
    moto_header, moto_claims, _ = jwt_segments(moto.id_token if kind == "id" else moto.access_token)

    assert set(moto_header) - set(our_header) == MOTO_ONLY_HEADER
    assert set(our_header) - set(moto_header) == set()

    assert set(moto_claims) - set(our_claims) == set(), "every claim moto issues, dev_idp issues too"
    assert set(our_claims) - set(moto_claims) <= extras
    ours_shape, moto_shape = shape(our_claims), shape(moto_claims)
    mismatched = {name for name in moto_shape if ours_shape[name] != moto_shape[name]}
    assert mismatched <= set(DELIBERATE), {n: (ours_shape[n], moto_shape[n]) for n in mismatched}
    if kind == "id":
        assert ours_shape["email_verified"] == "bool" and moto_shape["email_verified"] == "str"
    else:
        assert "aud" not in our_claims and "aud" not in moto_claims


async def test_moto_tokens_verify_with_its_jwks_like_ours_do(browser: aiohttp.ClientSession, moto: MotoPool) -> None:
    """The verification recipe we use for dev_idp (PyJWKSet, kid lookup, RS256 only) works on moto's tokens."""
    async with browser.get(moto.jwks_url) as response:
        keys = jwt.PyJWKSet.from_dict(await response.json())
    kid = jwt.get_unverified_header(moto.id_token)["kid"]
    key = next(k for k in keys.keys if k.key_id == kid)
    claims = jwt.decode(moto.id_token, key.key, algorithms=["RS256"], audience=moto.client_id, issuer=moto.issuer)
    assert claims["token_use"] == "id" and claims["cognito:groups"] == ["admins"]
