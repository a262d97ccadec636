"""gateway.identity_middleware: the path's rule, then the identity (Bearer token or session cookie), then the check,
in that order; run through the real middlewares on a tiny app (``pipeline``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from gateway.errors import StoreUnavailable
from gateway.session_backends import CookieBackend, Loaded

from .factories import identity, session_settings
from .pipeline import Pipeline, StandInOidc

Start = Callable[..., Awaitable[Pipeline]]
MACHINE = identity(
    sub="bot", username=None, email=None, groups=(), client_id="app", scopes=frozenset({"r/read"}), via="bearer"
)


# Sessions --------------------------------------------------------------------------------------------------------
async def test_without_a_session_a_protected_path_is_401_for_api_clients(pipeline: Start) -> None:
    answer = await (await pipeline()).send("/reports")
    assert answer.status == 401 and answer.json()["error"] == "unauthorized"
    assert answer.headers["WWW-Authenticate"].startswith("Bearer realm=")


async def test_a_session_cookie_is_the_identity(pipeline: Start) -> None:
    gateway = await pipeline()
    answer = await gateway.send("/reports", headers=gateway.cookie_for())
    assert answer.status == 200 and answer.json() == {"user": "alice", "via": "session"}


async def test_a_public_path_needs_no_session(pipeline: Start) -> None:
    answer = await (await pipeline(public=("/health",))).send("/health")
    assert answer.status == 200 and answer.json()["user"] is None


async def test_on_a_public_path_a_session_is_still_resolved(pipeline: Start) -> None:
    gateway = await pipeline(public=("/static/",))
    answer = await gateway.send("/static/app.js", headers=gateway.cookie_for())
    assert answer.json()["user"] == "alice", "the upstream may personalise a public page"


async def test_the_rule_is_decided_on_the_path_without_the_query(pipeline: Start) -> None:
    gateway = await pipeline(public=("/health",), rules="/admin/=deny")
    assert (await gateway.send("/health?check=db")).status == 200
    assert (await gateway.send("/admin/x?next=/health")).status == 403


# Each rule kind, through the middleware --------------------------------------------------------------------------
async def test_a_group_rule_refuses_a_signed_in_non_member_with_403(pipeline: Start) -> None:
    gateway = await pipeline(rules="/admin/=group:admins")
    answer = await gateway.send("/admin/users", headers=gateway.cookie_for(identity=identity(groups=("staff",))))
    assert answer.status == 403 and answer.json()["error"] == "forbidden" and answer.json()["user"] == "alice"


async def test_a_group_rule_lets_a_member_through(pipeline: Start) -> None:
    gateway = await pipeline(rules="/admin/=group:admins")
    assert (await gateway.send("/admin/users", headers=gateway.cookie_for())).status == 200


async def test_a_group_rule_sends_the_anonymous_to_sign_in_not_403(pipeline: Start) -> None:
    assert (await (await pipeline(rules="/admin/=group:admins")).send("/admin")).status == 401


async def test_deny_is_403_before_any_identity_is_resolved(pipeline: Start) -> None:
    gateway = await pipeline(rules="/internal/=deny", api_clients=frozenset({"app"}))
    answer = await gateway.send("/internal/x", headers={"Authorization": "Bearer not-a-known-token"})
    assert answer.status == 403, "not 401: nothing about the token matters on a closed path"
    assert (await gateway.send("/internal/x", headers=gateway.cookie_for())).status == 403


async def test_an_ambiguous_path_is_400_never_the_public_rule(pipeline: Start) -> None:
    gateway = await pipeline(public=("/public/",), rules="/admin/=group:admins")
    answer = await gateway.send("/public/..%2Fadmin/users")
    assert answer.status == 400 and answer.json()["error"] == "ambiguous_path"


# Bearer tokens ---------------------------------------------------------------------------------------------------
async def test_a_bearer_token_is_the_identity_when_api_clients_are_on(pipeline: Start) -> None:
    gateway = await pipeline(oidc=StandInOidc({"good-token": MACHINE}), api_clients=frozenset({"app"}))
    answer = await gateway.send("/api", headers={"Authorization": "Bearer good-token"})
    assert answer.status == 200 and answer.json() == {"user": "client app", "via": "bearer"}


async def test_without_api_clients_a_bearer_token_is_ignored(pipeline: Start) -> None:
    gateway = await pipeline(oidc=StandInOidc({"good-token": MACHINE}))
    assert (await gateway.send("/api", headers={"Authorization": "Bearer good-token"})).status == 401


async def test_an_invalid_bearer_token_never_falls_back_to_the_cookie(pipeline: Start) -> None:
    gateway = await pipeline(oidc=StandInOidc({"good-token": MACHINE}), api_clients=frozenset({"app"}))
    headers = {"Authorization": "Bearer forged", **gateway.cookie_for()}
    answer = await gateway.send("/api", headers=headers)
    assert answer.status == 401 and 'error="invalid_token"' in answer.headers["WWW-Authenticate"]


async def test_on_a_public_path_an_invalid_bearer_token_makes_the_request_anonymous(pipeline: Start) -> None:
    gateway = await pipeline(public=("/open",), api_clients=frozenset({"app"}))
    answer = await gateway.send("/open", headers={"Authorization": "Bearer forged"})
    assert answer.status == 200 and answer.json()["user"] is None


async def test_a_scope_rule_refuses_a_token_without_the_scope(pipeline: Start) -> None:
    gateway = await pipeline(
        rules="/reports/=scope:r/write", oidc=StandInOidc({"t": MACHINE}), api_clients=frozenset({"app"})
    )
    answer = await gateway.send("/reports/1", headers={"Authorization": "Bearer t"})
    assert answer.status == 403 and answer.json()["error"] == "insufficient_scope"
    assert 'error="insufficient_scope"' in answer.headers["WWW-Authenticate"]
    assert 'scope="r/write"' in answer.headers["WWW-Authenticate"]


# CORS preflights -------------------------------------------------------------------------------------------------
PREFLIGHT = {"Origin": "https://other.example", "Access-Control-Request-Method": "POST"}


async def test_a_preflight_needs_a_session_unless_configured_otherwise(pipeline: Start) -> None:
    assert (await (await pipeline()).send("/api", method="OPTIONS", headers=PREFLIGHT)).status == 401


async def test_skip_auth_preflight_lets_a_preflight_through(pipeline: Start) -> None:
    gateway = await pipeline(skip_auth_preflight=True)
    assert (await gateway.send("/api", method="OPTIONS", headers=PREFLIGHT)).status == 200


async def test_skip_auth_preflight_needs_both_preflight_headers(pipeline: Start) -> None:
    gateway = await pipeline(skip_auth_preflight=True)
    assert (await gateway.send("/api", method="OPTIONS", headers={"Origin": "https://o.example"})).status == 401


async def test_skip_auth_preflight_never_opens_a_denied_path(pipeline: Start) -> None:
    gateway = await pipeline(rules="/internal/=deny", skip_auth_preflight=True)
    assert (await gateway.send("/internal/x", method="OPTIONS", headers=PREFLIGHT)).status == 403


# The gateway's own routes ----------------------------------------------------------------------------------------
async def test_a_route_without_a_policy_needs_no_identity_whatever_the_rules(pipeline: Start) -> None:
    gateway = await pipeline(rules="/oauth2/=deny")
    answer = await gateway.send("/oauth2/healthz")
    assert answer.status == 200 and answer.json()["user"] is None


async def test_a_routes_own_policy_beats_the_rules(pipeline: Start) -> None:
    gateway = await pipeline(public=("/oauth2/",))
    assert (await gateway.send("/oauth2/userinfo")).status == 401


# The session store -----------------------------------------------------------------------------------------------
class DownBackend(CookieBackend):
    """A session store that cannot be reached."""

    async def load(self, value: str) -> Loaded | None:
        raise StoreUnavailable()


@pytest.fixture
def down() -> DownBackend:
    return DownBackend(session_settings(keys=(bytes(range(32)),)))


async def test_an_unreachable_store_is_503_on_a_protected_path(pipeline: Start, down: DownBackend) -> None:
    gateway = await pipeline(backend=down)
    answer = await gateway.send("/reports", headers={"Cookie": "_cognito_gateway=" + "A" * 43})
    assert answer.status == 503 and answer.json()["error"] == "session_store_unavailable"


async def test_an_unreachable_store_makes_a_public_request_anonymous(pipeline: Start, down: DownBackend) -> None:
    gateway = await pipeline(backend=down, public=("/open",))
    answer = await gateway.send("/open", headers={"Cookie": "_cognito_gateway=" + "A" * 43})
    assert answer.status == 200 and answer.json()["user"] is None
