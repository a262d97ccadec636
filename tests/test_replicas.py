"""Three gateways with the same configuration behind a round-robin balancer, in both store modes: sign in
through one, keep working through the others, and refresh with a burst spread over all three."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .cluster import Cluster, RedisServer, spread_client
from .conftest import CAROL
from .stack import HTML, fill_form

TOKEN_TTL = 6


@pytest.fixture(params=["cookie", "redis"])
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    redis = RedisServer() if request.param == "redis" else None
    extra = {"GATEWAY_SESSION_STORE": "redis", "GATEWAY_REDIS_URL": redis.url} if redis else {}
    running = Cluster.start(tmp_path, replicas=3, token_ttl=TOKEN_TTL, extra_env=extra, extra_users=[CAROL])
    yield running
    running.stop()
    if redis is not None:
        redis.stop()


def access_lines(cluster: Cluster) -> list[int]:
    return [gateway.output().count('"GET /api/whoami"') for gateway in cluster.gateways]


async def served_since(cluster: Cluster, before: list[int], *, total: int) -> list[int]:
    """Requests each replica logged since ``before``, once all ``total`` have reached the logs (read by threads)."""
    deadline = time.monotonic() + 10
    while True:
        served = [after - b for after, b in zip(access_lines(cluster), before, strict=True)]
        if sum(served) >= total or time.monotonic() > deadline:
            return served
        await asyncio.sleep(0.05)


async def test_sign_in_through_one_keep_working_through_all_and_refresh_once(cluster: Cluster) -> None:
    store = cluster.env.get("GATEWAY_SESSION_STORE", "cookie")
    async with cluster.balancer():
        async with spread_client() as browser:
            async with browser.get(f"{cluster.public_url}/", headers=HTML) as page:
                landed = await fill_form(browser, page, {"username": "carol", "password": "carol-password"})
            assert landed.status == 200 and str(landed.url) == f"{cluster.public_url}/"
            issued = time.time()
            set_cookies = [h for r in (*landed.history, landed) for h in r.headers.getall("Set-Cookie", [])]
            assert max(len(h) for h in set_cookies) <= 4096
            cookie_header = "; ".join(f"{c.key}={c.value}" for c in browser.cookie_jar)
            assert len(cookie_header) < 8192
            assert sum("_login_" in c.key for c in browser.cookie_jar) == 0, "login-state cookies never pile up"

            before = access_lines(cluster)
            for _ in range(9):
                async with browser.get(f"{cluster.public_url}/api/whoami") as response:
                    assert response.status == 200
                    groups = dict((await response.json())["headers"])["X-Forwarded-Groups"]
                    assert len(groups.split(",")) == 10
            served = await served_since(cluster, before, total=9)
            assert all(count >= 2 for count in served), f"every replica served some requests: {served}"

            # Real processes cannot share a fake clock: wait for the refresh window (tests/test_sessions_refresh.py
            # does the single-gateway cases on a fake clock).
            await asyncio.sleep(max(0, issued + TOKEN_TTL / 2 + 0.3 - time.time()))
            calls_before = (await cluster.token_requests()).get("refresh_token", 0)
            before_burst = access_lines(cluster)
            responses = await asyncio.gather(*(browser.get(f"{cluster.public_url}/api/whoami") for _ in range(30)))
            statuses = [r.status for r in responses]
            for r in responses:
                r.release()
            calls = (await cluster.token_requests()).get("refresh_token", 0) - calls_before
            burst = await served_since(cluster, before_burst, total=30)
    print(f"{store} store, 3 replicas, 30-request burst: {calls} refresh call(s)")
    assert statuses == [200] * 30
    if store == "redis":
        assert calls == 1, "the Redis lock: one refresh for the whole deployment"
    else:
        assert 1 <= calls <= 3, "cookie mode has no shared lock: at most one refresh per replica"
    assert all(count > 0 for count in burst), f"the burst was spread over every replica: {burst}"
