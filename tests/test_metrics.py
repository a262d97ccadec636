"""Prometheus metrics: counted on the real gateway process, served only on GATEWAY_METRICS_LISTEN, summed across
processes (prometheus_client's multiprocess mode), and configured with the usual exit-2 report."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway import metrics, observe
from gateway.bodies import PayloadTooLarge
from gateway.config import ConfigError, Settings
from gateway.errors import (
    BadRequest,
    Forbidden,
    IdpUnavailable,
    InsufficientScope,
    NeedsSignIn,
    SignInFailed,
    StoreUnavailable,
    TokenRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.websocket_proxy import OriginRefused, UpstreamRefusedWebSocket

from .cluster import RedisServer
from .stack import HTML, Stack, browse_and_sign_in
from .support import ROOT, CapturedProcess, free_port, new_browser
from .unit.test_config import MINIMAL

TOKEN_TTL = 6  # refreshed halfway through: 3 s after sign-in
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return parse(response.read().decode())


def settled(port: int) -> Samples:
    """A scrape once no request is in flight: a request is recorded just after its last byte went out, so a client
    can be done with it a moment before the gateway is."""
    deadline = time.monotonic() + 5
    while value(samples := scrape(port), "gateway_requests_in_flight") != 0:
        assert time.monotonic() < deadline, "requests stayed in flight"
        time.sleep(0.02)
    return samples


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, int, int]]:
    """A gateway with metrics on, an admins-only path, and /down/ routed to a port where nothing listens."""
    metrics_port, closed_port = free_port(), free_port()
    env = {
        "GATEWAY_METRICS_LISTEN": f"127.0.0.1:{metrics_port}",
        "GATEWAY_RULES": "/admin/=group:admins",
        "GATEWAY_UPSTREAMS": f"/down/=http://127.0.0.1:{closed_port}",
    }
    running = Stack.start(tmp_path_factory.mktemp("metrics"), gateway_env=env, idp_args=("--token-ttl", str(TOKEN_TTL)))
    yield running, metrics_port, closed_port
    running.stop()


async def test_requests_are_counted_by_outcome(observed: tuple[Stack, int, int]) -> None:
    stack, port, _ = observed
    before = scrape(port)
    async with new_browser() as browser:
        async with browser.get(f"{stack.url}/api/whoami", headers={"Accept": "application/json"}) as anonymous:
            assert anonymous.status == 401
        await browse_and_sign_in(browser, f"{stack.url}/api/whoami")  # a redirect to sign in, then the callback
        async with browser.get(f"{stack.url}/api/whoami") as proxied:
            assert proxied.status == 200
        async with browser.get(f"{stack.url}/down/anything") as down:
            assert down.status == 502
    async with new_browser() as bob:
        await browse_and_sign_in(bob, f"{stack.url}/api/whoami", "bob", "bob-password")
        async with bob.get(f"{stack.url}/admin/", headers={"Accept": "application/json"}) as refused:
            assert refused.status == 403
    after = settled(port)
    requests = "gateway_requests_total"
    assert moved(before, after, requests, route="proxy", outcome="unauthorized", status="4xx") == 1
    assert moved(before, after, requests, route="proxy", outcome="redirected_to_sign_in", status="3xx") == 2
    assert moved(before, after, requests, route="callback", outcome="endpoint", status="3xx") == 2
    assert moved(before, after, requests, route="proxy", outcome="proxied", status="2xx") >= 3
    assert moved(before, after, requests, route="proxy", outcome="upstream_unavailable", status="5xx") == 1
    assert moved(before, after, requests, route="proxy", outcome="forbidden", status="4xx") == 1
    assert moved(before, after, "gateway_sign_ins_total") == 2


async def test_a_sign_in_that_resumes_a_kept_form_counts_as_a_sign_in(observed: tuple[Stack, int, int]) -> None:
    stack, port, _ = observed
    before = scrape(port)
    form = {"Content-Type": "application/x-www-form-urlencoded", **HTML}
    async with new_browser() as browser:
        async with browser.post(f"{stack.url}/api/form", data="a=1", headers=form) as kept:
            assert kept.status == 200, "the form is kept through the sign-in"
            authorize = json.loads(re.search(r"location.replace\(([^)]+)\)", await kept.text()).group(1))
        resumed = await browse_and_sign_in(browser, authorize)
        assert resumed.status == 200 and "post_restore" in await resumed.text(), "the callback's resume page"
    after = settled(port)
    assert moved(before, after, "gateway_sign_ins_total") == 1
    assert moved(before, after, "gateway_requests_total", route="callback", outcome="endpoint", status="2xx") == 1
    assert not any(
        name == "gateway_sign_in_failures_total" and moved(before, after, name, **dict(labels))
        for name, labels in after
    )


async def test_latency_histograms_move_for_the_request_and_its_upstream_part(
    observed: tuple[Stack, int, int],
) -> None:
    stack, port, _ = observed
    before = scrape(port)
    async with new_browser() as browser:
        await browse_and_sign_in(browser, f"{stack.url}/api/whoami")
        async with browser.get(f"{stack.url}/api/slow?seconds=0.3") as slow:
            assert slow.status == 200
            await slow.read()
    after = settled(port)
    upstream = {"upstream": stack.upstream_url.rstrip("/")}
    assert moved(before, after, "gateway_upstream_response_seconds_count", **upstream) >= 2
    assert moved(before, after, "gateway_upstream_response_seconds_sum", **upstream) >= 0.3
    fast = moved(before, after, "gateway_upstream_response_seconds_bucket", le="0.25", **upstream)
    assert fast < moved(before, after, "gateway_upstream_response_seconds_count", **upstream), "the slow one is not"
    whole = {"route": "proxy", "outcome": "proxied"}
    assert moved(before, after, "gateway_request_duration_seconds_count", **whole) >= 2
    assert moved(before, after, "gateway_request_duration_seconds_sum", **whole) >= 0.3


async def test_requests_in_flight_are_a_gauge(observed: tuple[Stack, int, int]) -> None:
    stack, port, _ = observed
    async with new_browser() as browser:
        await browse_and_sign_in(browser, f"{stack.url}/api/whoami")
        slow = asyncio.ensure_future(browser.get(f"{stack.url}/api/slow?seconds=1"))
        await asyncio.sleep(0.5)
        during = await asyncio.to_thread(scrape, port)
        async with await slow as response:
            assert response.status == 200
            await response.read()
    assert value(during, "gateway_requests_in_flight") >= 1
    settled(port)
    assert value(during, "gateway_open_websockets") == 0


async def test_failed_sign_ins_are_counted_by_reason(observed: tuple[Stack, int, int]) -> None:
    stack, port, _ = observed
    before = scrape(port)
    async with aiohttp.ClientSession() as client:
        for query in ("state=forged&code=whatever", "error=access_denied&state=s", ""):
            async with client.get(f"{stack.url}/cognito_redirect?{query}", allow_redirects=False) as response:
                assert response.status in (400, 403)
    after = settled(port)
    failures = "gateway_sign_in_failures_total"
    assert moved(before, after, failures, reason="invalid_state") == 1
    assert moved(before, after, failures, reason="access_denied") == 1
    assert moved(before, after, failures, reason="invalid_callback") == 1
    assert moved(before, after, "gateway_sign_ins_total") == 0


async def test_refreshes_and_jwks_fetches_are_counted(observed: tuple[Stack, int, int]) -> None:
    stack, port, _ = observed
    assert value(scrape(port), "gateway_jwks_fetches_total", result="ok") >= 1, "the keys were loaded at startup"
    async with new_browser() as browser:
        await browse_and_sign_in(browser, f"{stack.url}/api/whoami")
        before = scrape(port)
        await asyncio.sleep(TOKEN_TTL / 2 + 0.5)
        async with browser.get(f"{stack.url}/api/whoami") as response:
            assert response.status == 200
    assert moved(before, settled(port), "gateway_session_refreshes_total", result="refreshed") == 1


async def test_metrics_are_never_on_the_public_port(observed: tuple[Stack, int, int]) -> None:
    """``/metrics`` on the public port is a path like any other: ruled (a 401 without a session) and proxied."""
    stack, port, _ = observed
    async with new_browser() as browser:
        async with browser.get(f"{stack.url}/metrics", headers={"Accept": "application/json"}) as anonymous:
            assert anonymous.status == 401
            assert "gateway_requests_total" not in await anonymous.text()
        await browse_and_sign_in(browser, f"{stack.url}/api/whoami")
        async with browser.get(f"{stack.url}/metrics") as signed_in:
            assert signed_in.status == 404, "upstream_demo has no /metrics: the request went upstream"
            assert "gateway_requests_total" not in await signed_in.text()
    samples = settled(port)
    assert value(samples, "gateway_requests_total", route="proxy", outcome="proxied", status="4xx") >= 1
    assert not any(name == "gateway_session_store_up" for name, _ in samples), "no store to reach: no series"


def test_the_metrics_listener_answers_only_metrics(observed: tuple[Stack, int, int]) -> None:
    _, port, _ = observed
    with pytest.raises(urllib.error.HTTPError) as elsewhere:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5)
    assert elsewhere.value.code == 404
    elsewhere.value.close()


def test_the_session_store_gauge_follows_redis(tmp_path: Path) -> None:
    redis_server = RedisServer()
    port = free_port()
    env = {
        "GATEWAY_METRICS_LISTEN": f"127.0.0.1:{port}",
        "GATEWAY_SESSION_STORE": "redis",
        "GATEWAY_REDIS_URL": redis_server.url,
    }
    stack = Stack.start(tmp_path, gateway_env=env)
    try:
        deadline = time.monotonic() + 5  # the first ping is made as the gateway starts
        while value(scrape(port), "gateway_session_store_up", store="redis") != 1:
            assert time.monotonic() < deadline, "the store was never reported up"
            time.sleep(0.1)
    finally:
        stack.stop()
        redis_server.stop()


async def test_the_store_watch_reports_what_the_store_says() -> None:
    class Store:
        answer = "unreachable: ConnectionError"

        async def readiness(self) -> str:
            return self.answer

    store = Store()
    watch = metrics.store_watch(store)  # type: ignore[arg-type]
    registry = metrics._instruments().registry
    context = watch(None)  # type: ignore[arg-type]
    await anext(context)
    await asyncio.sleep(0)
    assert registry.get_sample_value("gateway_session_store_up", {"store": "redis"}) == 0
    with pytest.raises(StopAsyncIteration):
        await anext(context)


# Across processes ------------------------------------------------------------------------------------------------
_WORKER = """
import os
from gateway import metrics
for _ in range(3):
    metrics.request_started()
    metrics.request_finished("proxy", "proxied", 200, 0.02)
metrics.request_started()  # still in flight when the process ends (as if it died mid-request)
metrics.upstream_answered("http://app:5000", 0.01)
print(os.getpid())
"""
_SCRAPE = """
import asyncio
from aiohttp.test_utils import TestClient, TestServer
from gateway import metrics

async def main():
    async with TestClient(TestServer(metrics.exposition_app())) as client:
        response = await client.get("/metrics")
        print(await response.text())

asyncio.run(main())
"""


def _python(code: str, directory: Path) -> str:
    env = {**os.environ, metrics.MULTIPROC_ENV: str(directory)}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout


def test_two_processes_are_summed_by_one_scrape(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a worker supervisor gets: N processes writing to one PROMETHEUS_MULTIPROC_DIR, any one of them (here a
    third) answering a scrape with the sum; a dead worker's live gauges leave the sum, its counters stay."""
    first, second = (int(_python(_WORKER, tmp_path)) for _ in range(2))
    samples = parse(_python(_SCRAPE, tmp_path))
    proxied = {"route": "proxy", "outcome": "proxied"}
    assert value(samples, "gateway_requests_total", status="2xx", **proxied) == 6
    assert value(samples, "gateway_request_duration_seconds_count", **proxied) == 6
    assert value(samples, "gateway_request_duration_seconds_bucket", le="0.025", **proxied) == 6
    assert value(samples, "gateway_upstream_response_seconds_count", upstream="http://app:5000") == 2
    assert value(samples, "gateway_requests_in_flight") == 2
    monkeypatch.setenv(metrics.MULTIPROC_ENV, str(tmp_path))
    metrics.process_exited(first)
    samples = parse(_python(_SCRAPE, tmp_path))
    assert value(samples, "gateway_requests_in_flight") == 1, f"only worker {second} is alive"
    assert value(samples, "gateway_requests_total", status="2xx", **proxied) == 6


_LISTENING_WORKER = """
import asyncio, sys
from aiohttp import web
from gateway import metrics
from gateway.config import Settings
from tests.unit.test_config import MINIMAL

async def main(port, requests):
    settings = Settings.from_env({**MINIMAL, "GATEWAY_METRICS_LISTEN": f"127.0.0.1:{port}"})
    app = web.Application()
    app.cleanup_ctx.extend(metrics.contexts(settings, None))
    runner = web.AppRunner(app)
    await runner.setup()  # starts the listener, as create_app's cleanup context does in a worker
    for _ in range(requests):
        metrics.request_started()
        metrics.request_finished("proxy", "proxied", 200, 0.01)
    metrics.request_started()
    print("ready", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
"""


def test_workers_share_the_metrics_port_and_each_answers_with_the_sum(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers (as the supervisor forks them) listen on one GATEWAY_METRICS_LISTEN port with SO_REUSEPORT;
    whichever the kernel hands a scrape answers with the sum of both, and after one dies the other still does."""
    port, env = free_port(), {metrics.MULTIPROC_ENV: str(tmp_path)}
    workers = [CapturedProcess(["-c", _LISTENING_WORKER, str(port), str(n)], env) for n in (2, 5)]
    try:
        for worker in workers:
            worker.wait_for("^ready$")
        proxied = {"route": "proxy", "outcome": "proxied", "status": "2xx"}
        for _ in range(8):
            samples = scrape(port)
            assert value(samples, "gateway_requests_total", **proxied) == 7
            assert value(samples, "gateway_requests_in_flight") == 2
        workers[0].stop()
        monkeypatch.setenv(metrics.MULTIPROC_ENV, str(tmp_path))  # as in the supervisor's process
        metrics.process_exited(workers[0].proc.pid)
        samples = scrape(port)
        assert value(samples, "gateway_requests_total", **proxied) == 7, "a dead worker's counts stay"
        assert value(samples, "gateway_requests_in_flight") == 1, "its requests in flight do not"
    finally:
        for worker in workers:
            worker.stop()


_SUPERVISOR = """
import asyncio, os, signal, sys, time, urllib.request
from aiohttp import web
from gateway import metrics
from gateway.config import Settings
from tests.unit.test_config import MINIMAL

port = int(sys.argv[1])
settings = Settings.from_env({**MINIMAL, "GATEWAY_METRICS_LISTEN": f"127.0.0.1:{port}"})
metrics.prepare(settings)
assert "prometheus_client" not in sys.modules, "importing the gateway must not import it"

def worker(requests):
    async def serve():
        app = web.Application()
        app.cleanup_ctx.extend(metrics.contexts(settings, None))
        await web.AppRunner(app).setup()
        for _ in range(requests):
            metrics.request_started()
            metrics.request_finished("proxy", "proxied", 200, 0.01)
        metrics.request_started()
        await asyncio.sleep(60)
    asyncio.run(serve())

def fork(requests):
    pid = os.fork()
    if pid == 0:
        worker(requests)
        os._exit(0)
    return pid

def scrape(total, in_flight):
    wanted = [f'gateway_requests_total{{outcome="proxied",route="proxy",status="2xx"}} {total}',
              f"gateway_requests_in_flight {in_flight}"]
    for _ in range(100):
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
            if all(line in text.splitlines() for line in wanted):
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"never {wanted}")

pids = [fork(2), fork(3)]
try:
    scrape(5.0, 2.0)
    os.kill(pids[0], signal.SIGKILL)
    os.waitpid(pids[0], 0)
    metrics.process_exited(pids[0])  # the supervisor has imported prometheus_client now, and forks again:
    scrape(5.0, 1.0)
    pids[0] = fork(10)
    scrape(15.0, 2.0)
    print("ok")
finally:
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
"""


def test_forked_workers_are_summed_and_a_restarted_one_adds_to_the_counts() -> None:
    """The worker supervisor's model: prepare(), then fork; a worker dies, is marked dead, and is forked again."""
    env = {k: v for k, v in os.environ.items() if k != metrics.MULTIPROC_ENV}
    done = subprocess.run(
        [sys.executable, "-c", _SUPERVISOR, str(free_port())], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert done.stdout.strip() == "ok", done.stderr


def test_prepare_makes_a_private_directory_or_empties_the_given_one(tmp_path: Path) -> None:
    code = """
import os, sys
from gateway import metrics
from gateway.config import Settings
from tests.unit.test_config import MINIMAL
directory = metrics.prepare(Settings.from_env({**MINIMAL, "GATEWAY_METRICS_LISTEN": "127.0.0.1:9090"}))
print(directory, os.environ["PROMETHEUS_MULTIPROC_DIR"], sorted(os.listdir(directory)))
"""
    stale = tmp_path / "counter_1.db"
    stale.write_bytes(b"left by an earlier run")
    given = _python(code, tmp_path).split()
    assert given == [str(tmp_path), str(tmp_path), "[]"]
    env = {k: v for k, v in os.environ.items() if k != metrics.MULTIPROC_ENV}
    made = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True
    ).stdout.split()
    assert made[0] == made[1] and "cognito-gateway-metrics-" in made[0]
    assert not Path(made[0]).exists(), "removed when the process exits"


def test_prepare_refuses_to_come_after_prometheus_client() -> None:
    import prometheus_client  # noqa: F401  (imported, as a test process has it)

    settings = Settings.from_env({**MINIMAL, "GATEWAY_METRICS_LISTEN": "127.0.0.1:9090"})
    if metrics.MULTIPROC_ENV in os.environ:
        pytest.skip("this test process runs in multiprocess mode")
    with pytest.raises(RuntimeError, match="before prometheus_client is imported"):
        metrics.prepare(settings)
    assert metrics.prepare(Settings.from_env(MINIMAL)) is None, "metrics off: nothing to prepare"


# Outcomes and configuration --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("exc", "name", "reason"),
    [
        (NeedsSignIn(), "unauthorized", "unauthorized"),
        (Forbidden(), "forbidden", "forbidden"),
        (InsufficientScope(frozenset({"a"})), "forbidden", "insufficient_scope"),
        (BadRequest("x", code="invalid_rd"), "bad_request", "invalid_rd"),
        (SignInFailed("x", code="invalid_state"), "sign_in_failed", "invalid_state"),
        (TokenRejected("invalid_grant"), "sign_in_failed", "invalid_grant"),
        (TokenRejected("made_up_by_the_idp"), "sign_in_failed", "token_rejected"),
        (IdpUnavailable(), "idp_unavailable", "idp_unavailable"),
        (StoreUnavailable(), "store_unavailable", "session_store_unavailable"),
        (UpstreamUnavailable(), "upstream_unavailable", "upstream_unavailable"),
        (UpstreamTimeout(), "upstream_timeout", "upstream_timeout"),
        (aiohttp.web.HTTPNotFound(), "http_error", "http_404"),
        (OriginRefused(), "forbidden", "origin_not_allowed"),
        (PayloadTooLarge(10), "http_error", "body_too_large"),
        (UpstreamRefusedWebSocket(403), "proxied", "websocket_refused"),
        (ValueError("unexpected"), "error", "server_error"),
    ],
)
def test_every_failure_has_an_outcome(exc: BaseException, name: str, reason: str) -> None:
    assert observe.outcome_of(exc) == observe.Outcome(name, reason)


def test_a_navigation_that_needs_a_sign_in_is_redirected() -> None:
    assert observe.outcome_of(NeedsSignIn(), redirected=True) == observe.REDIRECTED_TO_SIGN_IN


def test_label_values_stay_bounded() -> None:
    assert metrics._label("invalid_state") == "invalid_state"
    assert metrics._label("Invalid State!") == "other"
    assert metrics._label("x" * 49) == "other"
    assert [metrics.status_class(s) for s in (200, 302, 404, 502, None)] == ["2xx", "3xx", "4xx", "5xx", "none"]


def test_metrics_configuration() -> None:
    assert Settings.from_env(MINIMAL).observability.metrics_listen is None, "off by default"
    on = Settings.from_env({**MINIMAL, "GATEWAY_METRICS_LISTEN": "127.0.0.1:9090"}).observability
    assert on.metrics_listen == ("127.0.0.1", 9090)
    assert Settings.from_env({**MINIMAL, "GATEWAY_METRICS_LISTEN": "off"}).observability.metrics_listen is None
    six = Settings.from_env({**MINIMAL, "GATEWAY_METRICS_LISTEN": "[::1]:9090"}).observability
    assert six.metrics_listen == ("::1", 9090)


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"GATEWAY_METRICS_LISTEN": "9090"}, "GATEWAY_METRICS_LISTEN: '9090' must be host:port"),
        ({"GATEWAY_METRICS_LISTEN": "127.0.0.1:0"}, "GATEWAY_METRICS_LISTEN: '127.0.0.1:0' must be host:port"),
        ({"GATEWAY_METRICS_LISTEN": "127.0.0.1:8000"}, "GATEWAY_METRICS_LISTEN: port 8000 is a public port"),
        (
            {"GATEWAY_METRICS_LISTEN": "0.0.0.0:8443", "GATEWAY_LISTEN": "0.0.0.0:8443"},
            "GATEWAY_METRICS_LISTEN: port 8443 is a public port",
        ),
    ],
)
def test_a_bad_metrics_listener_is_a_config_error(env: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError) as error:
        Settings.from_env({**MINIMAL, **env})
    assert any(p.startswith(problem) for p in error.value.problems), error.value.problems


def test_a_metrics_port_that_is_taken_stops_the_gateway() -> None:
    with socket.socket() as taken:  # another program's listener, without SO_REUSEPORT
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {
            **{k: v for k, v in MINIMAL.items() if k != "COGNITO_USER_POOL_ID"},
            "COGNITO_ISSUER": f"http://127.0.0.1:{free_port()}/pool",  # nothing there: the IdP is retried later
            "GATEWAY_LISTEN": f"127.0.0.1:{free_port()}",
            "GATEWAY_METRICS_LISTEN": f"127.0.0.1:{taken.getsockname()[1]}",
        }
        done = subprocess.run(
            [sys.executable, "-m", "gateway"], cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True,
            timeout=60, check=False,
        )  # fmt: skip
    assert done.returncode != 0
    assert f"cannot listen on GATEWAY_METRICS_LISTEN=127.0.0.1:{env['GATEWAY_METRICS_LISTEN'].split(':')[1]}" in (
        done.stderr
    )
