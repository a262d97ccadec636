"""Test support: real servers on loopback, and a scripted browser for the hosted-UI forms.

Servers run either in-process (an aiohttp app on a socket bound to 127.0.0.1:0, when a test needs to move dev_idp's
clock) or as the real ``python -m …`` processes, with their output captured so tests can read banners and logs.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

ROOT = Path(__file__).resolve().parent.parent


class FakeClock:
    """A clock tests move by hand: ``clock.advance(301)`` makes a five-minute code expire.

    It starts at the wall clock's now, or at ``start``; a whole second makes boundaries exact (``int(now)`` is now).
    """

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


_CSRF = re.compile(r'name=_csrf value="([^"]+)"')


def csrf_from(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "the page has no _csrf field"
    return match.group(1)


def new_browser() -> aiohttp.ClientSession:
    """A client that keeps cookies like a browser (also for 127.0.0.1) and never follows redirects by itself."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def submit_form(
    browser: aiohttp.ClientSession, page_url: str, fields: Mapping[str, str]
) -> aiohttp.ClientResponse:
    """GET a hosted-UI page, then POST its form with ``fields`` and the page's CSRF token, as a person would."""
    async with browser.get(page_url, allow_redirects=False) as page:
        assert page.status == 200, (page.status, page.headers.get("Location"))
        html = await page.text()
    action = re.search(r'<form method=post action="([^"]+)"', html)
    assert action
    target = str(URL(page_url).join(URL(action.group(1).replace("&amp;", "&"))))
    data = {"_csrf": csrf_from(html), **fields}
    response = await browser.post(target, data=data, allow_redirects=False)
    await response.read()
    return response


@dataclasses.dataclass
class AuthorizeAttempt:
    state: str
    nonce: str
    verifier: str
    challenge: str

    @classmethod
    def new(cls) -> AuthorizeAttempt:
        verifier, challenge = pkce_pair()
        return cls(secrets.token_urlsafe(16), secrets.token_urlsafe(16), verifier, challenge)

    def query(self, client_id: str, redirect_uri: str, scope: str = "openid email profile") -> dict[str, str]:
        return {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": scope,
            "state": self.state,
            "nonce": self.nonce,
            "code_challenge": self.challenge,
            "code_challenge_method": "S256",
        }


class CapturedProcess:
    """A child (``python -m …`` unless ``program`` names another executable, such as node) whose stdout and stderr
    lines are collected by threads, so tests can wait on them."""

    def __init__(
        self,
        args: list[str],
        env: Mapping[str, str] | None = None,
        cwd: Path = ROOT,
        *,
        inherit_env: bool = True,
        program: str = sys.executable,
    ) -> None:
        full_env = {**(os.environ if inherit_env else {}), "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(
            [program, *args],
            cwd=cwd,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._pumps = [
            threading.Thread(target=self._pump, args=(stream,), daemon=True)
            for stream in (self.proc.stdout, self.proc.stderr)
        ]
        for pump in self._pumps:
            pump.start()

    def _pump(self, stream: Any) -> None:
        for line in stream:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    match = regex.search(line)
                    if match:
                        return match
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._changed.wait(0.2)):
                    raise AssertionError(f"no line matched {pattern!r}; output so far:\n" + "\n".join(self.lines))
                self._changed.wait(min(remaining, 0.5))

    def output(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for pump in self._pumps:  # the last lines first: closing a stream under a pump's read raises there
            pump.join(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@dataclasses.dataclass
class DevIdpProcess:
    process: CapturedProcess
    env: dict[str, str]
    admin_token: str

    @property
    def url(self) -> str:
        return self.env["COGNITO_DOMAIN"]


def start_dev_idp(*args: str, env: Mapping[str, str] | None = None) -> DevIdpProcess:
    process = CapturedProcess(["-m", "dev_idp", "--port", "0", *args], env)
    process.wait_for(r"^# ready$")
    gateway_env = {}
    for line in process.output().splitlines():
        if re.match(r"^[A-Z_]+=", line):
            key, _, value = line.partition("=")
            gateway_env[key] = value
    token = process.wait_for(r"admin token .*: (\S+)$").group(1)
    return DevIdpProcess(process, gateway_env, token)


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path


def jwt_segments(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Header and payload of a compact JWT as JSON, and the raw payload text (to check serialisation)."""
    header_b64, payload_b64, _ = token.split(".")

    def decode(segment: str) -> str:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)).decode()

    payload_text = decode(payload_b64)
    return json.loads(decode(header_b64)), json.loads(payload_text), payload_text


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def launch_chromium(playwright: Any) -> Any:
    """Debian's Chromium under Playwright (it cannot download a browser of its own here), headless."""
    return playwright.chromium.launch(
        executable_path=CHROMIUM,
        args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
    )
