"""The identity header families an app can be configured for, and the access token passed along.

Each family is tested as the app that reads it would see it, through upstream_demo's echo of the headers it got:
``remote`` (Authelia/Authentik names: Remote-User, Remote-Groups, Remote-Email, Remote-Name), ``grafana`` (Grafana's
auth proxy: X-WEBAUTH-USER with ``headers = Email:X-WEBAUTH-EMAIL Name:X-WEBAUTH-NAME Groups:X-WEBAUTH-GROUPS``; Grafana
itself is not installable here, so this is its header contract, not Grafana), ``oauth2-proxy`` and ``alb``. Then
GATEWAY_PASS_ACCESS_TOKEN on two replicas behind one public URL: the token arrives in both of its headers, is the one
the session refreshed to, fits the cookie limits, and the replicas answer for each other's keys. Last, the header
cache itself, in-process with a clock the test moves.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import random
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import jwt
import pytest

from gateway.headers import DEFAULT_FAMILIES, HeaderPolicy
from gateway.identity import Identity
from gateway.signed_identity import LIFETIME, RENEW_BEFORE, IdentitySigner
from gateway.signing_keys import SigningKeys, derived_private_key

from .cluster import Cluster
from .stack import HTML, Stack, browse_and_sign_in, fill_form, start_gateway
from .support import FakeClock, free_port, new_browser
from .test_signed_identity import ALICE, forged, one, received, segments

DORA = {
    "username": "dora",
    "password": "dora-password",
    "email": "dora@example.com",
    "groups": ["ops", "on call", "a,b"],
    "attributes": {"name": "Dora Márquez"},
}
EVERY_FAMILY = "oauth2-proxy,alb,remote,grafana"
SPOOFED = [
    ("Remote-User", "mallory"),
    ("Remote_Groups", "admins"),
    ("X-WEBAUTH-USER", "mallory"),
    ("X_WEBAUTH_GROUPS", "Admin"),
    ("X-Forwarded-User", "mallory"),
    ("X-Amzn-Oidc-Data", "mallory"),
]


@pytest.fixture(scope="module")
def families(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {"GATEWAY_IDENTITY_HEADERS": EVERY_FAMILY}
    running = Stack.start(tmp_path_factory.mktemp("families"), gateway_env=env, extra_users=[DORA])
    yield running
    running.stop()


async def _signed_in_headers(stack: Stack, username: str) -> list[tuple[str, str]]:
    async with new_browser() as browser:
        landed = await browse_and_sign_in(browser, f"{stack.url}/", username, f"{username}-password")
        assert landed.status == 200
        async with browser.get(f"{stack.url}/api/whoami", headers=SPOOFED) as response:
            return [(name.lower(), value) for name, value in (await response.json())["headers"]]


async def test_every_family_for_a_user(families: Stack) -> None:
    seen = await _signed_in_headers(families, "alice")
    assert not any("mallory" in value or value == "Admin" for _, value in seen), seen
    expected = {
        # Authelia / Authentik names
        "remote-user": "alice",
        "remote-groups": "admins",
        "remote-email": "alice@example.com",
        "remote-name": "Alice Liddell",
        # Grafana's auth proxy
        "x-webauth-user": "alice",
        "x-webauth-email": "alice@example.com",
        "x-webauth-name": "Alice Liddell",
        "x-webauth-groups": "admins",
        # oauth2-proxy
        "x-forwarded-user": "alice",
        "x-forwarded-email": "alice@example.com",
        "x-forwarded-groups": "admins",
        "x-forwarded-preferred-username": "alice.l",
    }
    assert {name: one(seen, name) for name in expected} == expected
    assert segments(one(seen, "x-amzn-oidc-data"))[1]["name"] == "Alice Liddell"


async def test_lists_and_names_are_encoded_alike_in_every_family(families: Stack) -> None:
    seen = await _signed_in_headers(families, "dora")
    # Each group percent-encoded on its own, so splitting on "," gives back exactly dora's three groups.
    groups = "ops,on%20call,a%2Cb"
    assert one(seen, "remote-groups") == one(seen, "x-webauth-groups") == one(seen, "x-forwarded-groups") == groups
    assert one(seen, "remote-name") == one(seen, "x-webauth-name") == "Dora M%C3%A1rquez"
    claims = segments(one(seen, "x-amzn-oidc-data"))[1]
    assert claims["name"] == "Dora Márquez" and claims["cognito:groups"] == DORA["groups"], "JSON needs no encoding"


async def test_a_family_left_out_is_not_sent_and_still_stripped(families: Stack) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**families.env, "GATEWAY_LISTEN": f"127.0.0.1:{port}", "GATEWAY_PUBLIC_URL": url}
    gateway = start_gateway({**env, "GATEWAY_IDENTITY_HEADERS": "remote"})
    try:
        seen = await received(url, forged(env), headers=SPOOFED)
    finally:
        gateway.stop()
    names = {name for name, _ in seen}
    assert one(seen, "remote-user") == "alice" and one(seen, "remote-name") == "Alice Liddell"
    assert not {n for n in names if n.startswith(("x-forwarded-user", "x-forwarded-email", "x-amzn-", "x-webauth"))}
    assert not any("mallory" in value for _, value in seen), seen


# GATEWAY_PASS_ACCESS_TOKEN, two replicas --------------------------------------------------------------------------
TOKEN_TTL = 6
BOT_SECRET = "reports-bot-dev-secret-for-local-use-only"


@pytest.fixture(scope="module")
def tokens_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    env = {"GATEWAY_PASS_ACCESS_TOKEN": "true", "GATEWAY_API_CLIENT_IDS": "gateway,reports-bot"}
    running = Cluster.start(tmp_path_factory.mktemp("tokens"), replicas=2, token_ttl=TOKEN_TTL, extra_env=env)
    yield running
    running.stop()


async def _idp_keys(cluster: Cluster) -> jwt.PyJWKSet:
    async with aiohttp.ClientSession() as client:
        async with client.get(f"{cluster.env['COGNITO_ISSUER']}/.well-known/jwks.json") as response:
            return jwt.PyJWKSet.from_dict(await response.json())


async def _whoami(base: str, cookies: dict[str, str] | None = None, headers: dict[str, str] | None = None) -> tuple:
    async with aiohttp.ClientSession(cookies=cookies) as client:
        async with client.get(f"{base}/api/whoami", headers=headers) as response:
            assert response.status == 200
            seen = [(name.lower(), value) for name, value in (await response.json())["headers"]]
            return seen, response.headers.getall("Set-Cookie", [])


async def test_the_access_token_is_passed_refreshed_and_fits_the_cookies(tokens_cluster: Cluster) -> None:
    cookies, issued = await tokens_cluster.sign_in()
    assert len(cookies) <= 2 and all(len(value) <= 3800 for value in cookies.values()), cookies.keys()
    first = f"http://127.0.0.1:{tokens_cluster.ports[0]}"
    seen, _ = await _whoami(first, cookies)
    token = one(seen, "x-amzn-oidc-accesstoken")
    assert one(seen, "x-forwarded-access-token") == token
    key = (await _idp_keys(tokens_cluster))[jwt.get_unverified_header(token)["kid"]]
    claims = jwt.decode(token, key, algorithms=["RS256"], issuer=tokens_cluster.env["COGNITO_ISSUER"])
    assert claims["token_use"] == "access" and claims["username"] == "alice"
    await asyncio.sleep(max(0, issued + TOKEN_TTL / 2 + 0.3 - time.time()))  # inside the refresh window
    seen, set_cookies = await _whoami(first, cookies)
    refreshed = one(seen, "x-amzn-oidc-accesstoken")
    assert refreshed != token and one(seen, "x-forwarded-access-token") == refreshed
    assert any(c.startswith("_cognito_gateway=") for c in set_cookies), "the session now holds the new token"


async def test_a_bearer_users_token_is_passed_and_a_machine_gets_no_user_headers(tokens_cluster: Cluster) -> None:
    cookies, _ = await tokens_cluster.sign_in()
    first = f"http://127.0.0.1:{tokens_cluster.ports[0]}"
    user_token = one((await _whoami(first, cookies))[0], "x-forwarded-access-token")
    seen, _ = await _whoami(first, headers={"Authorization": f"Bearer {user_token}"})
    assert one(seen, "x-forwarded-access-token") == user_token == one(seen, "x-amzn-oidc-accesstoken")
    assert segments(one(seen, "x-amzn-oidc-data"))[1]["username"] == "alice", "a person, so a signed header"
    async with aiohttp.ClientSession() as client:
        auth = {"Authorization": aiohttp.encode_basic_auth("reports-bot", BOT_SECRET)}
        data = {"grant_type": "client_credentials", "scope": "reports/read"}
        async with client.post(f"{tokens_cluster.idp.url}/oauth2/token", data=data, headers=auth) as response:
            machine = (await response.json())["access_token"]
    seen, _ = await _whoami(first, headers={"Authorization": f"Bearer {machine}"})
    names = {name for name, _ in seen}
    assert one(seen, "x-forwarded-client-id") == "reports-bot"
    assert not names & {"x-amzn-oidc-data", "x-amzn-oidc-identity", "x-forwarded-user", "x-forwarded-access-token"}


async def test_every_replica_answers_for_every_key(tokens_cluster: Cluster) -> None:
    cookies, _ = await tokens_cluster.sign_in()
    signed = one((await _whoami(f"http://127.0.0.1:{tokens_cluster.ports[0]}", cookies))[0], "x-amzn-oidc-data")
    other = f"http://127.0.0.1:{tokens_cluster.ports[1]}"
    async with aiohttp.ClientSession() as client:
        async with client.get(f"{other}/oauth2/keys/{segments(signed)[0]['kid']}") as response:
            pem = await response.text()
    assert jwt.decode(signed, pem, algorithms=["ES256"])["username"] == "alice"


async def _sign_in_at(cluster: Cluster, port: int, user: str) -> tuple[int, str, dict[str, str]]:
    """Sign in through the gateway on ``port`` (the IdP sends the browser back to the shared public URL)."""
    url = f"http://127.0.0.1:{port}"
    async with new_browser() as browser:
        async with browser.get(f"{url}/", headers=HTML) as page:
            back = await fill_form(browser, page, {"username": user, "password": f"{user}-password"}, follow=False)
        callback = back.headers["Location"].replace(cluster.public_url, url)
        async with browser.get(callback, headers=HTML, allow_redirects=False) as response:
            text = await response.text()
            return response.status, text, {c.key: c.value for c in browser.cookie_jar if c.key.startswith("_cognito")}


async def test_a_session_too_big_with_its_access_token_gets_the_clear_page(tmp_path: Path) -> None:
    # Sixty groups: the session fits two cookies as it is, and no longer with the access token (which lists them too).
    gus = {"username": "gus", "password": "gus-password", "email": "gus@example.com"}
    gus["groups"] = [f"engineering-team-{i:03d}" for i in range(60)]  # type: ignore[assignment]
    cluster = Cluster.start(tmp_path, replicas=1, extra_users=[gus])
    port = free_port()
    cluster.gateways.append(
        start_gateway({**cluster.env, "GATEWAY_LISTEN": f"127.0.0.1:{port}", "GATEWAY_PASS_ACCESS_TOKEN": "true"})
    )
    try:
        status, _, cookies = await _sign_in_at(cluster, cluster.ports[0], "gus")
        assert status == 302 and len([name for name in cookies if not name.startswith("_cognito_gateway_login")]) == 2
        status, page, cookies = await _sign_in_at(cluster, port, "gus")
        assert status == 400 and "more information (such as group memberships) than fits in browser cookies" in page
        assert "GATEWAY_SESSION_STORE=redis" in page
        assert not any(name == "_cognito_gateway" for name in cookies), "no half-written session"
    finally:
        cluster.stop()


# The header cache, in-process --------------------------------------------------------------------------------------
def _policy(clock: FakeClock, **options: object) -> HeaderPolicy:
    keys = SigningKeys([derived_private_key(b"k" * 32)])
    signer = IdentitySigner(keys, signer_arn="arn:x", issuer="https://issuer.example", client_id="gateway")
    return HeaderPolicy(cookie_names=("_cognito_gateway",), signer=signer, clock=clock, **options)  # type: ignore[arg-type]


def test_headers_are_built_once_and_renewed_shortly_before_the_signed_one_expires() -> None:
    clock = FakeClock()
    policy = _policy(clock)
    first = policy.identity_headers(ALICE)
    assert policy.identity_headers(ALICE) is first, "a cache hit: nothing built, nothing signed"
    clock.advance(LIFETIME - RENEW_BEFORE - 1)
    assert policy.identity_headers(ALICE) is first
    clock.advance(1)
    renewed = policy.identity_headers(ALICE)
    old, new = dict(first)["X-Amzn-Oidc-Data"], dict(renewed)["X-Amzn-Oidc-Data"]
    assert segments(new)[0]["exp"] == segments(old)[0]["exp"] + LIFETIME - RENEW_BEFORE
    assert segments(new)[0]["exp"] - int(clock()) == LIFETIME


def test_a_new_access_token_gives_new_headers_for_the_same_person() -> None:
    policy = _policy(FakeClock(), pass_access_token=True)
    before = dict(policy.identity_headers(dataclasses.replace(ALICE, access_token="a.b.c")))
    after = dict(policy.identity_headers(dataclasses.replace(ALICE, access_token="d.e.f")))
    assert before["X-Forwarded-Access-Token"] == "a.b.c" and after["X-Forwarded-Access-Token"] == "d.e.f"
    assert before["X-Amzn-Oidc-Accesstoken"] == "a.b.c"


def test_default_families_and_a_machine() -> None:
    policy = _policy(FakeClock())
    assert [name for name, _ in policy.identity_headers(ALICE)] == [
        "X-Forwarded-User",
        "X-Forwarded-Email",
        "X-Forwarded-Groups",
        "X-Amzn-Oidc-Identity",
        "X-Amzn-Oidc-Data",
    ]
    assert {"oauth2-proxy", "alb"} == DEFAULT_FAMILIES
    machine = Identity(sub="bot", username=None, client_id="bot", via="bearer", scopes=frozenset({"r"}))
    assert policy.identity_headers(machine) == (("X-Forwarded-Client-Id", "bot"), ("X-Forwarded-Scopes", "r"))


def test_any_claims_give_segments_that_are_standard_base64_too() -> None:
    rng = random.Random(7)
    alphabet = 'ab~?>\x7f é€😀,%"\\/-_+=.'
    keys = SigningKeys([derived_private_key(b"r" * 32)])
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
        signer = IdentitySigner(keys, signer_arn="arn:" + text, issuer="https://i/" + text, client_id=text)
        identity = Identity(sub=text, username=text, email=text, email_verified=True, groups=(text, text[::-1]))
        token, _ = signer.sign(identity, now=time.time())
        header, payload, _ = token.split(".")
        for segment in (header, payload):
            assert base64.b64decode(segment, validate=True) == base64.urlsafe_b64decode(segment)
        assert json.loads(base64.b64decode(payload))["username"] == text
        assert jwt.decode(token, keys.current.pem, algorithms=["ES256"])["cognito:groups"] == [text, text[::-1]]
