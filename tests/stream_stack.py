"""dev_idp, ``tests.stream_upstream`` and the gateway as real processes, for the WebSocket and streaming tests.

Like ``stack.Stack.start``, with the aiohttp upstream of ``tests/stream_upstream.py`` in upstream_demo's place, and
a way to start more gateways beside the first (other settings, same IdP and upstream).
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Mapping
from pathlib import Path

import aiohttp

from .stack import SESSION_SECRET, Stack, directory_for, start_gateway
from .support import CapturedProcess, free_port, start_dev_idp, write_json

BOT_SECRET = "reports-bot-dev-secret-for-local-use-only"
# A gateway log line that means a failure was not handled (the "ERROR aiohttp.server traceback").
UNHANDLED = re.compile(r"Traceback|ERROR aiohttp|Error handling request|Unhandled exception")


def start_stream_upstream() -> tuple[CapturedProcess, str]:
    process = CapturedProcess(["-m", "tests.stream_upstream", "--port", "0"])
    return process, process.wait_for(r"listening on (http://\S+)").group(1)


def start_stream_stack(tmp: Path, gateway_env: Mapping[str, str] | None = None) -> Stack:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    idp = start_dev_idp("--users", str(write_json(tmp / "users.json", directory_for(url))))
    upstream, upstream_url = start_stream_upstream()
    env = {
        **idp.env,
        "GATEWAY_UPSTREAM": upstream_url,
        "GATEWAY_PUBLIC_URL": url,
        "GATEWAY_LISTEN": f"127.0.0.1:{port}",
        "GATEWAY_SESSION_SECRET": SESSION_SECRET,
        **(gateway_env or {}),
    }
    return Stack(idp, upstream, upstream_url, start_gateway(env), url, env)


def gateway_beside(stack: Stack, **overrides: str) -> tuple[CapturedProcess, str]:
    """Another gateway on the stack's IdP and upstream, with some settings changed; sessions of the first work."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**stack.env, "GATEWAY_LISTEN": f"127.0.0.1:{port}", **overrides}
    # Same public URL, so the same cookie and Origin rules; the test talks to the second port directly.
    return start_gateway(env), url


def tag() -> str:
    """A fresh path segment: the lines of one test in the gateway's log and the upstream's carry it."""
    return f"t{secrets.token_hex(4)}"


def lines_with(process: CapturedProcess, text: str) -> list[str]:
    return [line for line in process.output().splitlines() if text in line]


async def line(process: CapturedProcess, pattern: str, within: float = 10.0) -> str:
    """The first output line of ``process`` matching ``pattern``, waited for without blocking the event loop (an
    open WebSocket of the test must go on answering pings meanwhile)."""
    match = await asyncio.to_thread(process.wait_for, pattern, within)
    return match.string


async def settle(seconds: float = 0.3) -> None:
    """Time for a log line that would be written (and must not be) to show up."""
    await asyncio.sleep(seconds)


async def machine_token(stack: Stack) -> str:
    """An access token of dev_idp's machine client reports-bot (client_credentials)."""
    async with aiohttp.ClientSession() as client:
        auth = {"Authorization": aiohttp.encode_basic_auth("reports-bot", BOT_SECRET)}
        data = {"grant_type": "client_credentials", "scope": "reports/read"}
        async with client.post(f"{stack.idp.url}/oauth2/token", data=data, headers=auth) as response:
            assert response.status == 200, await response.text()
            return (await response.json())["access_token"]
