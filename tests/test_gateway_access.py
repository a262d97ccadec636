"""Access rules, public paths, the 403 page and Bearer-token API clients, on the real processes.

One stack (dev_idp, upstream_demo, gateway) runs with a rule of every kind under upstream_demo's ``/api/echo/``,
which answers with the request as it arrived, so each test can tell whether the upstream saw the request and with
which headers. dev_idp keeps its signing keys in a file the tests read, so they can mint the tokens an attacker
would present (expired, foreign-key, another client's) next to the real ones dev_idp issues.
"""

from __future__ import annotations

import asyncio
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from yarl import URL

from dev_idp.keys import PoolKeys, load_or_create_keys

from .stack import HTML, Stack, browse_and_sign_in
from .support import AuthorizeAttempt, new_browser
from .test_dev_idp_flow import exchange, sign_in

ECHO = "/api/echo"
RULES = "; ".join(
    [
        f"{ECHO}/admin/=group:admins",
        f"{ECHO}/reports/=scope:reports/read",
        f"{ECHO}/closed=deny",
        f"{ECHO}/corp/=email-domain:example.com",
        f"{ECHO}/partners/=email-domain:partner.example",
        f"{ECHO}/public/private/=authenticated",
    ]
)
BOT_SECRET = "reports-bot-dev-secret-for-local-use-only"


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("keys") / "keys.json"


@pytest.fixture(scope="module")
def rules_stack(tmp_path_factory: pytest.TempPathFactory, keys_file: Path) -> Iterator[Stack]:
    env = {
        "GATEWAY_PUBLIC_PATHS": f"{ECHO}/public/,{ECHO}/health",
        "GATEWAY_RULES": RULES,
        "GATEWAY_API_CLIENT_IDS": "gateway,reports-bot",
    }
    running = Stack.start(tmp_path_factory.mktemp("rules"), gateway_env=env, idp_args=("--keys", str(keys_file)))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def pool_keys_on_disk(rules_stack: Stack, keys_file: Path) -> PoolKeys:
    return load_or_create_keys(keys_file)


def _idp(stack: Stack) -> types.SimpleNamespace:
    """What dev_idp's flow helpers need to know about the real-process dev_idp."""
    return types.SimpleNamespace(
        url=stack.idp.url, issuer=stack.env["COGNITO_ISSUER"], redirect_uri=lambda: f"{stack.url}/cognito_redirect"
    )


async def _status_and_echo(
    url: str, *, headers: dict[str, str] | None = None, cookies: Any = None, method: str = "GET"
) -> tuple[int, dict[str, Any] | None, aiohttp.ClientResponse]:
    async with aiohttp.ClientSession(cookies=cookies) as client:
        target = URL(url, encoded=True)
        async with client.request(method, target, headers=headers, allow_redirects=False) as response:
            body = await response.json() if response.content_type == "application/json" else None
            echo = body if isinstance(body, dict) and "raw_uri" in body else None
            return response.status, echo, response


def _echo_headers(echo: dict[str, Any]) -> dict[str, str]:
    return {name.lower(): value for name, value in echo["headers"]}


async def _sign_in(stack: Stack, username: str, *, lands_on: int = 200) -> dict[str, str]:
    """The gateway's cookies after ``username`` signed in through the hosted-UI form and landed on ``/``."""
    async with new_browser() as browser:
        landed = await browse_and_sign_in(browser, f"{stack.url}/", username, f"{username}-password")
        assert landed.status == lands_on
        return {c.key: c.value for c in browser.cookie_jar if c.key.startswith("_cognito_gateway")}


def _signed_in(stack: Stack, username: str) -> dict[str, str]:
    return asyncio.run(_sign_in(stack, username))


@pytest.fixture(scope="module")
def alice(rules_stack: Stack) -> dict[str, str]:
    return _signed_in(rules_stack, "alice")


@pytest.fixture(scope="module")
def bob(rules_stack: Stack) -> dict[str, str]:
    return _signed_in(rules_stack, "bob")


# Public paths -----------------------------------------------------------------------------------------------------
async def test_public_paths_need_no_sign_in_and_still_strip_spoofed_identity(rules_stack: Stack) -> None:
    spoofed = {"X-Forwarded-User": "admin", "X_Forwarded_Email": "root@evil.example", "Accept": "application/json"}
    for path in (f"{ECHO}/health", f"{ECHO}/public/logo.png", f"{ECHO}/public"):
        status, echo, _ = await _status_and_echo(f"{rules_stack.url}{path}", headers=spoofed)
        assert status == 200 and echo is not None, path
        seen = _echo_headers(echo)
        assert "x-forwarded-user" not in seen and "x-forwarded-email" not in seen and "x_forwarded_email" not in seen


async def test_an_exact_public_path_is_not_a_prefix(rules_stack: Stack) -> None:
    status, echo, _ = await _status_and_echo(f"{rules_stack.url}{ECHO}/health/more", headers={"Accept": "*/*"})
    assert status == 401 and echo is None


async def test_a_signed_in_users_identity_is_added_on_a_public_path(rules_stack: Stack, alice: dict) -> None:
    status, echo, _ = await _status_and_echo(f"{rules_stack.url}{ECHO}/public/x", cookies=alice)
    assert status == 200 and echo is not None
    assert _echo_headers(echo)["x-forwarded-user"] == "alice"


async def test_a_longer_rule_inside_a_public_prefix_wins(rules_stack: Stack, alice: dict) -> None:
    url = f"{rules_stack.url}{ECHO}/public/private/report"
    assert (await _status_and_echo(url, headers={"Accept": "*/*"}))[0] == 401
    assert (await _status_and_echo(url, cookies=alice))[0] == 200


# Groups, e-mail domains, deny, and the 403 page ------------------------------------------------------------------
async def test_group_rule_lets_members_in_and_shows_others_who_they_are(
    rules_stack: Stack, alice: dict, bob: dict
) -> None:
    url = f"{rules_stack.url}{ECHO}/admin/users"
    status, echo, _ = await _status_and_echo(url, cookies=alice)
    assert status == 200 and echo is not None and _echo_headers(echo)["x-forwarded-groups"] == "admins"
    before = rules_stack.upstream.output().count("/api/echo/admin/users")
    status, _, response = await _status_and_echo(url, cookies=bob, headers=HTML)
    assert status == 403 and "Location" not in response.headers
    async with aiohttp.ClientSession(cookies=bob) as client, client.get(url, headers=HTML) as page:
        html = await page.text()
    assert "Signed in as bob (bob@example.com)" in html
    assert 'action="/oauth2/sign_out"' in html and "<form method=post" in html
    async with aiohttp.ClientSession(cookies=bob) as client, client.get(url) as api:
        assert api.status == 403 and (await api.json()) == {
            "error": "forbidden",
            "message": "You are signed in, but not in a group this page is open to.",
            "user": "bob",
            "groups": [],
        }
    assert rules_stack.upstream.output().count("/api/echo/admin/users") == before, "the upstream never saw bob"


async def test_email_domain_rules(rules_stack: Stack, alice: dict) -> None:
    assert (await _status_and_echo(f"{rules_stack.url}{ECHO}/corp/x", cookies=alice))[0] == 200
    status, _, _ = await _status_and_echo(f"{rules_stack.url}{ECHO}/partners/x", cookies=alice)
    assert status == 403


async def test_deny_refuses_everyone_at_once(rules_stack: Stack, alice: dict) -> None:
    for cookies, headers in ((alice, None), (None, HTML), (None, {"Accept": "application/json"})):
        status, echo, response = await _status_and_echo(
            f"{rules_stack.url}{ECHO}/closed", cookies=cookies, headers=headers
        )
        assert status == 403 and echo is None and "Location" not in response.headers


async def test_unauthenticated_navigation_is_sent_to_sign_in_and_api_calls_get_401(rules_stack: Stack) -> None:
    url = f"{rules_stack.url}{ECHO}/admin/x"
    status, _, response = await _status_and_echo(url, headers=HTML)
    assert status == 302 and "/oauth2/authorize" in response.headers["Location"]
    status, _, response = await _status_and_echo(url, headers={"Accept": "application/json"})
    assert status == 401 and response.headers["WWW-Authenticate"].startswith("Bearer realm=")


# Decided on the path the upstream routes on ------------------------------------------------------------------
SPELLINGS = [
    "/public/../admin/x",
    "/public/%2e%2e/admin/x",
    "/public/%2E%2E/admin/x",
    "/public%2F..%2Fadmin/x",
    "/public/..%2Fadmin/x",
    "/public/..;/admin/x",
    "/public/%252e%252e/admin/x",
    "/public/./../admin/x",
    "//admin/x",
    "/Admin/x",
    "/ADMIN/x",
    "/admin;x/x",
    "/%61dmin/x",
    "/public/..\\admin/x",
    "/public/%5c../admin/x",
    "/public/%00/../admin/x",
]


@pytest.mark.parametrize("spelling", SPELLINGS)
async def test_no_spelling_of_a_protected_path_passes_as_public_or_as_another_rule(
    rules_stack: Stack, bob: dict, spelling: str
) -> None:
    url = f"{rules_stack.url}{ECHO}{spelling}"
    before = rules_stack.upstream.output().count("/admin")
    for cookies in (None, bob):
        status, echo, _ = await _status_and_echo(url, cookies=cookies, headers={"Accept": "application/json"})
        assert echo is None, f"{spelling} reached the upstream for {'bob' if cookies else 'anyone'}"
        assert status in (400, 401, 403), (spelling, status)
    assert rules_stack.upstream.output().count("/admin") == before


async def test_a_spelling_that_stays_under_one_rule_is_forwarded_byte_for_byte(rules_stack: Stack, alice: dict) -> None:
    status, echo, _ = await _status_and_echo(f"{rules_stack.url}{ECHO}/admin/a/../b%2Fc", cookies=alice)
    assert status == 200 and echo is not None and echo["raw_uri"] == f"{ECHO}/admin/a/../b%2Fc"


# Bearer tokens -------------------------------------------------------------------------------------------------
async def _machine_token(stack: Stack, scope: str = "reports/read") -> str:
    async with aiohttp.ClientSession() as client:
        auth = {"Authorization": aiohttp.encode_basic_auth("reports-bot", BOT_SECRET)}
        data = {"grant_type": "client_credentials", "scope": scope}
        async with client.post(f"{stack.idp.url}/oauth2/token", data=data, headers=auth) as response:
            assert response.status == 200, await response.text()
            return (await response.json())["access_token"]


async def _user_tokens(stack: Stack, scope: str) -> dict[str, str]:
    attempt = AuthorizeAttempt.new()
    async with new_browser() as browser:
        code = await sign_in(browser, _idp(stack), attempt, scope=scope)  # type: ignore[arg-type]
        response = await exchange(browser, _idp(stack), code, attempt.verifier)  # type: ignore[arg-type]
        assert response.status == 200
        return await response.json()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": "application/json"}


async def test_a_machine_token_is_a_client_never_a_user(rules_stack: Stack) -> None:
    token = await _machine_token(rules_stack)
    status, echo, _ = await _status_and_echo(f"{rules_stack.url}{ECHO}/reports/daily", headers=_bearer(token))
    assert status == 200 and echo is not None
    seen = _echo_headers(echo)
    assert seen["x-forwarded-client-id"] == "reports-bot" and seen["x-forwarded-scopes"] == "reports/read"
    assert not {"x-forwarded-user", "x-forwarded-email", "x-forwarded-groups", "x-amzn-oidc-identity"} & set(seen)
    status, _, _ = await _status_and_echo(f"{rules_stack.url}{ECHO}/admin/x", headers=_bearer(token))
    assert status == 403, "a machine is in no group"


async def test_a_users_access_token_carries_the_users_identity(rules_stack: Stack) -> None:
    tokens = await _user_tokens(rules_stack, "openid email profile reports/read")
    status, echo, _ = await _status_and_echo(
        f"{rules_stack.url}{ECHO}/reports/mine", headers=_bearer(tokens["access_token"])
    )
    assert status == 200 and echo is not None
    seen = _echo_headers(echo)
    assert seen["x-forwarded-user"] == "alice" and seen["x-forwarded-groups"] == "admins"
    assert seen["x-forwarded-client-id"] == "gateway"


async def test_a_token_without_the_paths_scope_gets_403_insufficient_scope(rules_stack: Stack) -> None:
    tokens = await _user_tokens(rules_stack, "openid email profile")
    status, echo, response = await _status_and_echo(
        f"{rules_stack.url}{ECHO}/reports/daily", headers=_bearer(tokens["access_token"])
    )
    assert status == 403 and echo is None
    assert response.headers["WWW-Authenticate"].startswith("Bearer ")
    assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]
    assert 'scope="reports/read"' in response.headers["WWW-Authenticate"]
    status, _, _ = await _status_and_echo(f"{rules_stack.url}{ECHO}/other", headers=_bearer(tokens["access_token"]))
    assert status == 200, "without a scope rule, any valid token of an allowed client passes"


def _mint(keys: PoolKeys, stack: Stack, *, which: str = "access", **changes: Any) -> str:
    now = int(time.time())
    claims = {
        "sub": "reports-bot",
        "client_id": "reports-bot",
        "token_use": "access",
        "scope": "reports/read",
        "iss": stack.env["COGNITO_ISSUER"],
        "iat": now,
        "exp": now + 600,
        **changes,
    }
    key = keys.access_token if which == "access" else keys.id_token
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, key.private_key, "RS256", {"kid": key.kid})


REFUSED = {
    "expired": lambda k, s: _mint(k, s, exp=int(time.time()) - 600, iat=int(time.time()) - 1200),
    "another client": lambda k, s: _mint(k, s, client_id="stranger", sub="stranger"),
    "another pool": lambda k, s: _mint(k, s, iss="https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_other"),
    "token_use id": lambda k, s: _mint(k, s, which="id", token_use="id", aud="gateway"),
    "no exp": lambda k, s: _mint(k, s, exp=None),
    "foreign key": lambda k, s: jwt.encode(
        {"sub": "x", "client_id": "reports-bot", "token_use": "access", "iss": s.env["COGNITO_ISSUER"]},
        load_or_create_keys(None).access_token.private_key,
        "RS256",
        {"kid": k.access_token.kid},
    ),
    "garbage": lambda k, s: "not-a-jwt",
}


@pytest.mark.parametrize("case", sorted(REFUSED))
async def test_bad_bearer_tokens_get_401_invalid_token(
    rules_stack: Stack, pool_keys_on_disk: PoolKeys, alice: dict, case: str
) -> None:
    token = REFUSED[case](pool_keys_on_disk, rules_stack)
    for headers in (_bearer(token), {**_bearer(token), **HTML}):
        # A session cookie next to a bad token changes nothing: no fallback to the cookie, no redirect.
        status, echo, response = await _status_and_echo(
            f"{rules_stack.url}{ECHO}/other", headers=headers, cookies=alice
        )
        assert status == 401 and echo is None, case
        assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


async def test_id_and_refresh_tokens_from_dev_idp_are_not_bearer_tokens(rules_stack: Stack) -> None:
    tokens = await _user_tokens(rules_stack, "openid email profile")
    for kind in ("id_token", "refresh_token"):
        status, echo, response = await _status_and_echo(f"{rules_stack.url}{ECHO}/other", headers=_bearer(tokens[kind]))
        assert status == 401 and echo is None, kind
        assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


@pytest.mark.parametrize(
    "authorization",
    [["Bearer"], ["Bearer "], ["Bearer a b"], ["Bearer a\tb"], ["Bearer x", "Bearer y"], ["Bearer x", "Basic eA=="]],
)
async def test_malformed_or_ambiguous_authorization_gets_401(rules_stack: Stack, authorization: list[str]) -> None:
    async with aiohttp.ClientSession() as client:
        headers = [("Authorization", value) for value in authorization] + [("Accept", "application/json")]
        async with client.get(f"{rules_stack.url}{ECHO}/other", headers=headers, allow_redirects=False) as response:
            assert response.status == 401
            assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


async def test_a_bad_token_on_a_public_path_is_anonymous_not_refused(rules_stack: Stack) -> None:
    status, echo, _ = await _status_and_echo(f"{rules_stack.url}{ECHO}/health", headers=_bearer("not-a-jwt"))
    assert status == 200 and echo is not None and "x-forwarded-user" not in _echo_headers(echo)


# Global rules and CORS preflights, on their own gateway ----------------------------------------------------------
@pytest.fixture(scope="module")
def admins_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {
        "GATEWAY_ALLOWED_GROUPS": "admins",
        "GATEWAY_PUBLIC_PATHS": f"{ECHO}/health",
        "GATEWAY_SKIP_AUTH_PREFLIGHT": "true",
    }
    running = Stack.start(tmp_path_factory.mktemp("admins"), gateway_env=env)
    yield running
    running.stop()


async def test_allowed_groups_refuse_others_everywhere_but_public_paths(admins_only: Stack) -> None:
    bob = await _sign_in(admins_only, "bob", lands_on=403)  # signed in, then refused: no redirect loop
    async with aiohttp.ClientSession(cookies=bob) as client:
        async with client.get(f"{admins_only.url}/api/whoami", headers=HTML, allow_redirects=False) as response:
            assert response.status == 403 and "Signed in as bob" in await response.text()
        async with client.get(f"{admins_only.url}{ECHO}/health") as response:
            assert response.status == 200
    alice = await _sign_in(admins_only, "alice")
    async with aiohttp.ClientSession(cookies=alice) as client:
        async with client.get(f"{admins_only.url}/api/whoami") as response:
            assert response.status == 200


async def test_cors_preflight_passes_without_a_session_when_allowed(admins_only: Stack) -> None:
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    status, echo, _ = await _status_and_echo(f"{admins_only.url}{ECHO}/x", method="OPTIONS", headers=preflight)
    assert status == 200 and echo is not None and echo["method"] == "OPTIONS"
    status, echo, _ = await _status_and_echo(
        f"{admins_only.url}{ECHO}/x", method="OPTIONS", headers={"Origin": "https://app.example"}
    )
    assert status == 401 and echo is None, "an OPTIONS that is not a preflight still needs a session"


async def test_preflights_need_a_session_by_default(rules_stack: Stack) -> None:
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    status, echo, _ = await _status_and_echo(f"{rules_stack.url}{ECHO}/x", method="OPTIONS", headers=preflight)
    assert status == 401 and echo is None
