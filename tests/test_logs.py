"""Log lines on the real gateway process: GATEWAY_LOG_FORMAT=json, GATEWAY_ACCESS_LOG, and the request id that
follows a request from a trusted front proxy to the upstream and back."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from yarl import URL

from gateway import logs, request_id

from .stack import HTML, Stack, browse_and_sign_in, fill_form
from .support import ROOT, new_browser
from .unit.test_config import MINIMAL

GENERATED = re.compile(r"[0-9a-f]{32}")
# gateway/logs.py: __main__ calls logs.configure(settings) instead of logging.basicConfig.
NOT_WIRED = "python -m gateway does not call logs.configure(settings): GATEWAY_LOG_FORMAT and GATEWAY_ACCESS_LOG unused"
TEXT_ACCESS = re.compile(
    # the process's name, "[worker 2]", when the serving layer gives one
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO (\[[\w ]+\] )?aiohttp\.access: "
    r'127\.0\.0\.1 "GET /api/whoami" 401 \d+ [\d.]+ms$'
)


@pytest.fixture(scope="module")
def json_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """JSON lines at debug level, behind a trusted front proxy (the test client, on 127.0.0.1)."""
    env = {"GATEWAY_LOG_FORMAT": "json", "GATEWAY_LOG_LEVEL": "debug", "GATEWAY_TRUSTED_PROXIES": "127.0.0.1"}
    running = Stack.start(tmp_path_factory.mktemp("json"), gateway_env=env)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def text_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The defaults: text lines, access log on, no trusted proxy."""
    running = Stack.start(tmp_path_factory.mktemp("text"))
    yield running
    running.stop()


def json_lines(stack: Stack) -> list[dict[str, Any]]:
    lines = stack.gateway.output().splitlines()
    if lines and not lines[0].startswith("{"):
        pytest.fail(NOT_WIRED)
    return [json.loads(line) for line in lines]


def access_line(stack: Stack, rid: str, *, timeout: float = 5.0) -> dict[str, Any]:
    """The access line of request ``rid`` (written just after its answer, so it may take a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [line for line in json_lines(stack) if line["logger"] == "aiohttp.access" and line["request_id"] == rid]
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"no access line for {rid}"
        time.sleep(0.05)


def upstream_saw(body: dict[str, Any], name: str) -> list[str]:
    return [value for key, value in body["headers"] if key.lower() == name.lower()]


async def test_every_line_is_a_json_object(json_stack: Stack) -> None:
    async with aiohttp.ClientSession() as client:
        async with client.get(f"{json_stack.url}/api/whoami", headers={"Accept": "application/json"}) as response:
            assert response.status == 401
    lines = json_lines(json_stack)
    assert any(line["level"] == "debug" for line in lines)
    for line in lines:
        assert {"time", "level", "logger", "message"} <= line.keys(), line
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
    assert any(line["logger"] == "gateway" and line["message"].startswith("listening on") for line in lines)


async def test_an_access_line_says_who_what_and_how_long(json_stack: Stack) -> None:
    async with new_browser() as browser:
        await browse_and_sign_in(browser, f"{json_stack.url}/api/whoami")
        async with browser.get(f"{json_stack.url}/api/whoami?q=1", headers={"X-Request-Id": "trace-42"}) as response:
            assert response.status == 200
    line = access_line(json_stack, "trace-42")
    assert line["method"] == "GET" and line["path"] == "/api/whoami", "no query string"
    assert (line["status"], line["outcome"], line["user"], line["peer"]) == (200, "proxied", "alice", "127.0.0.1")
    assert line["duration_ms"] >= line["upstream_ms"] > 0
    assert line["message"].startswith('127.0.0.1 "GET /api/whoami" 200 ')


async def test_refusals_carry_their_outcome(json_stack: Stack) -> None:
    async with aiohttp.ClientSession() as client:
        async with client.get(f"{json_stack.url}/api/x", headers={"Accept": "application/json"}) as api:
            unauthorized = api.headers[request_id.HEADER]
        async with client.get(f"{json_stack.url}/api/x", headers=HTML, allow_redirects=False) as page:
            redirected = page.headers[request_id.HEADER]
    assert access_line(json_stack, unauthorized)["outcome"] == "unauthorized"
    assert access_line(json_stack, unauthorized)["user"] is None
    assert access_line(json_stack, redirected)["outcome"] == "redirected_to_sign_in"


async def test_a_trusted_proxys_request_id_is_kept_and_sent_upstream(json_stack: Stack) -> None:
    async with new_browser() as browser:
        await browse_and_sign_in(browser, f"{json_stack.url}/api/whoami")
        async with browser.get(f"{json_stack.url}/api/whoami", headers={"X-Request-Id": "edge-7f3a"}) as response:
            assert response.headers[request_id.HEADER] == "edge-7f3a"
            assert upstream_saw(await response.json(), "X-Request-Id") == ["edge-7f3a"]


@pytest.mark.parametrize("sent", ["has space", "x" * 129, "tab\there", "é"])
async def test_a_malformed_request_id_is_replaced_even_from_a_trusted_proxy(json_stack: Stack, sent: str) -> None:
    async with aiohttp.ClientSession() as client:
        headers = {"X-Request-Id": sent, "Accept": "application/json"}
        async with client.get(f"{json_stack.url}/oauth2/healthz", headers=headers) as response:
            assert GENERATED.fullmatch(response.headers[request_id.HEADER])


async def test_two_request_ids_are_one_too_many(json_stack: Stack) -> None:
    async with aiohttp.ClientSession() as client:
        headers = [("X-Request-Id", "one"), ("X-Request-Id", "two")]
        async with client.get(f"{json_stack.url}/oauth2/healthz", headers=headers) as response:
            assert GENERATED.fullmatch(response.headers[request_id.HEADER])


async def test_lines_written_for_a_request_carry_its_id_and_no_secret(json_stack: Stack) -> None:
    """At debug level: the sign-in's own line has the callback's request id; no code, cookie or JWT anywhere."""
    async with new_browser() as browser:
        async with browser.get(f"{json_stack.url}/api/whoami", headers=HTML) as page:
            back = await fill_form(browser, page, {"username": "alice", "password": "alice-password"}, follow=False)
        code = URL(back.headers["Location"]).query["code"]
        async with browser.get(URL(back.headers["Location"], encoded=True), allow_redirects=False) as callback:
            assert callback.status == 302
            rid = callback.headers[request_id.HEADER]
        cookies = [c.value[:40] for c in browser.cookie_jar if c.key.startswith("_cognito_gateway")]
    line = access_line(json_stack, rid)
    assert line["path"] == "/cognito_redirect" and line["outcome"] == "endpoint"
    signed_in = [entry for entry in json_lines(json_stack) if entry["message"].startswith("signed in 'alice'")]
    assert rid in [entry.get("request_id") for entry in signed_in]
    output = json_stack.gateway.output()
    for secret in [code, *cookies]:
        assert secret not in output
    assert "eyJ" not in output, "no JWT in the log"


async def test_an_untrusted_clients_request_id_is_replaced(text_stack: Stack) -> None:
    async with new_browser() as browser:
        await browse_and_sign_in(browser, f"{text_stack.url}/api/whoami")
        async with browser.get(f"{text_stack.url}/api/whoami", headers={"X-Request-Id": "chosen-by-me"}) as response:
            rid = response.headers[request_id.HEADER]
            body = await response.json()
    assert GENERATED.fullmatch(rid)
    assert upstream_saw(body, "X-Request-Id") == [rid], "the upstream saw the gateway's id, not the client's"


async def test_every_answer_has_a_request_id(text_stack: Stack) -> None:
    """The gateway's own pages, errors and redirects too, not only proxied responses."""
    async with aiohttp.ClientSession() as client:
        for path, headers in [
            ("/oauth2/healthz", {}),
            ("/api/whoami", {"Accept": "application/json"}),  # 401
            ("/api/whoami", HTML),  # 302 to sign in
            ("/oauth2/sign_in?rd=https://evil.example/", HTML),  # 400 page
            ("/cognito_redirect?state=forged&code=x", HTML),  # a failed sign-in
        ]:
            async with client.get(f"{text_stack.url}{path}", headers=headers, allow_redirects=False) as response:
                assert GENERATED.fullmatch(response.headers.get(request_id.HEADER, "")), (path, response.status)


async def test_text_lines_keep_their_old_format(text_stack: Stack) -> None:
    async with aiohttp.ClientSession() as client:
        async with client.get(f"{text_stack.url}/api/whoami", headers={"Accept": "application/json"}) as response:
            assert response.status == 401
    deadline = time.monotonic() + 5
    while not any(TEXT_ACCESS.match(line) for line in text_stack.gateway.lines):
        assert time.monotonic() < deadline, text_stack.gateway.output()
        await asyncio.sleep(0.05)
    assert not any(line.startswith("{") for line in text_stack.gateway.lines)


def test_the_access_log_can_be_turned_off(tmp_path_factory: pytest.TempPathFactory) -> None:
    """GATEWAY_ACCESS_LOG=false (as the benchmarks run): no access line, every other line as before."""
    stack = Stack.start(tmp_path_factory.mktemp("quiet"), gateway_env={"GATEWAY_ACCESS_LOG": "false"})
    try:
        for _ in range(3):
            with urllib.request.urlopen(f"{stack.url}/oauth2/healthz", timeout=5):
                pass
        time.sleep(0.3)
        output = stack.gateway.output()
    finally:
        stack.stop()
    assert "listening on" in output
    assert "aiohttp.access" not in output and "/oauth2/healthz" not in output, NOT_WIRED


# Unit: the formatter and configure -------------------------------------------------------------------------------
def _record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("gateway.auth", logging.INFO, __file__, 1, message, args, None)
    record.__dict__.update(extra)
    return record


def test_a_json_line_is_one_line_whatever_the_message_holds() -> None:
    formatter = logs.JsonFormatter("worker 2")
    token = request_id.CURRENT.set("rid-1")
    try:
        line = formatter.format(_record("user %r\nforged line", "a\u2028b\x00"))
    finally:
        request_id.CURRENT.reset(token)
    assert "\n" not in line and "\u2028" not in line
    parsed = json.loads(line)
    assert parsed["message"] == "user 'a\\u2028b\\x00'\nforged line"
    assert (parsed["process"], parsed["request_id"], parsed["level"]) == ("worker 2", "rid-1", "info")


def test_an_access_records_fields_join_the_line() -> None:
    line = json.loads(logs.JsonFormatter().format(_record("x", access={"status": 200, "user": None})))
    assert (line["status"], line["user"]) == (200, None)
    assert "process" not in line and "request_id" not in line


_CONFIGURED = """
import logging, sys
from gateway import logs
from gateway.config import Settings
from tests.unit.test_config import MINIMAL
logs.configure(Settings.from_env({**MINIMAL, **dict(a.split("=", 1) for a in sys.argv[1:])}), process="worker 1")
logging.getLogger("gateway.auth").info("hello")
logging.getLogger("aiohttp.access").info("an access line")
logging.getLogger("gateway.auth").debug("not at info")
"""


def _configured(*env: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", _CONFIGURED, *env], cwd=ROOT, env=os.environ, capture_output=True, text=True,
        timeout=60, check=True,
    )  # fmt: skip
    return done.stderr.splitlines()


def test_configure_writes_the_chosen_format_to_stderr() -> None:
    text = _configured()
    assert len(text) == 2
    assert re.fullmatch(r"\d{4}-\d\d-\d\d [\d:,]+ INFO \[worker 1\] gateway\.auth: hello", text[0])
    lines = [json.loads(line) for line in _configured("GATEWAY_LOG_FORMAT=json")]
    assert [(line["logger"], line["message"], line["process"]) for line in lines] == [
        ("gateway.auth", "hello", "worker 1"),
        ("aiohttp.access", "an access line", "worker 1"),
    ]


def test_configure_switches_the_access_log_on_its_own() -> None:
    assert _configured("GATEWAY_ACCESS_LOG=false")[1:] == []
    quiet = _configured("GATEWAY_LOG_LEVEL=error")
    assert len(quiet) == 1 and quiet[0].endswith("aiohttp.access: an access line"), "its own switch, not the level"


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"GATEWAY_LOG_FORMAT": "xml"}, "GATEWAY_LOG_FORMAT: 'xml' is not text or json"),
        ({"GATEWAY_ACCESS_LOG": "maybe"}, "GATEWAY_ACCESS_LOG: 'maybe' is not true or false"),
    ],
)
def test_bad_log_settings_are_config_errors(env: dict[str, str], problem: str) -> None:
    from gateway.config import ConfigError, Settings

    with pytest.raises(ConfigError) as error:
        Settings.from_env({**MINIMAL, **env})
    assert problem in error.value.problems


def test_request_ids() -> None:
    assert request_id.choose(["edge-1"], trusted=True) == "edge-1"
    assert GENERATED.fullmatch(request_id.choose(["edge-1"], trusted=False))
    assert GENERATED.fullmatch(request_id.choose([], trusted=True))
    assert request_id.choose(["x" * 128], trusted=True) == "x" * 128
