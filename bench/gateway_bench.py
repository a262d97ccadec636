"""Benchmark: authenticated requests through the gateway against the same upstream reached directly.

    .venv/bin/python bench/gateway_bench.py [--duration 10] [--connections 32] [--rounds 3]

It starts dev_idp, a minimal aiohttp upstream and the gateway on loopback, signs in once as alice, then runs wrk
(Debian's ``wrk``) against the upstream directly and through the gateway, alternating, ``--rounds`` times each. It
prints req/s and p50/p99 latency (medians over the rounds), the gateway's CPU seconds per 1,000 requests (from
/proc), and the gateway/direct ratios, which are what to compare between machines: absolute figures on shared
machines are noise. wrk sends the session cookie and ``Accept: text/html``, as a browser does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import aiohttp
from yarl import URL

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(args: list[str], env: dict[str, str] | None = None, ready: str = "") -> subprocess.Popen[str]:
    """Start a child and wait (30 s at most) for a line matching ``ready``; its output keeps being drained."""
    process = subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()  # type: ignore[union-attr]
    deadline = time.monotonic() + 30
    while True:
        try:
            if re.search(ready, lines.get(timeout=max(0.1, deadline - time.monotonic()))):
                return process
        except queue.Empty:
            process.kill()
            raise SystemExit(f"bench: {args} did not start within 30 s") from None


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


async def sign_in(gateway: str) -> str:
    """Sign in as alice through the hosted-UI form; return the Cookie header value for wrk."""
    html = {"Accept": "text/html"}
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        async with browser.get(f"{gateway}/", headers=html) as page:
            text = await page.text()
            form_url = page.url
        action = re.search(r'<form method=post action="([^"]+)"', text).group(1).replace("&amp;", "&")  # type: ignore[union-attr]
        csrf = re.search(r'name=_csrf value="([^"]+)"', text).group(1)  # type: ignore[union-attr]
        fields = {"_csrf": csrf, "username": "alice", "password": "alice-password"}
        async with browser.post(form_url.join(URL(action)), data=fields, headers=html) as landed:
            assert landed.status == 200, landed.status
        return "; ".join(f"{c.key}={c.value}" for c in browser.cookie_jar if c.key.startswith("_cognito_gateway"))


def wrk(url: str, *, duration: int, connections: int, headers: list[str]) -> dict[str, float]:
    command = [
        "wrk",
        "-t2",
        f"-c{connections}",
        f"-d{duration}s",
        "--latency",
        *[part for header in headers for part in ("-H", header)],
        url,
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out:
        raise SystemExit(f"bench: non-2xx answers from {url}:\n{out}")

    def latency(pct: str) -> float:
        value, unit = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]

    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "requests": float(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", metavar="SVG", help="record the gateway with py-spy during the first round")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench: wrk is missing (apt-get install wrk)")

    gateway_port, upstream_port = free_port(), free_port()
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    users = ROOT / "bench" / "results" / "users.json"
    users.parent.mkdir(exist_ok=True)
    directory = json.loads((ROOT / "dev_idp" / "default_directory.json").read_text())
    directory["clients"][0]["callback_urls"] = [f"{gateway_url}/cognito_redirect"]
    users.write_text(json.dumps(directory))

    children: list[subprocess.Popen[str]] = []
    try:
        idp_port = free_port()
        idp = start(["-m", "dev_idp", "--port", str(idp_port), "--users", str(users)], ready=r"^# ready")
        children.append(idp)
        upstream = start(["bench/fast_upstream.py", str(upstream_port)], ready="# ready")
        children.append(upstream)
        env = {
            "COGNITO_ISSUER": f"http://localhost:{idp_port}/local_devpool1",
            "COGNITO_CLIENT_ID": "gateway",
            "COGNITO_CLIENT_SECRET": "gateway-dev-secret-for-local-use-only",
            "GATEWAY_UPSTREAM": f"http://127.0.0.1:{upstream_port}",
            "GATEWAY_PUBLIC_URL": gateway_url,
            "GATEWAY_LISTEN": f"127.0.0.1:{gateway_port}",
            "GATEWAY_SESSION_SECRET": "dnZ/js812RQDSb1Qdi0JioX6KnZx3KBKhqAh67NUdZQ=",
            "GATEWAY_LOG_LEVEL": "warning",
        }
        gateway = start(["-m", "gateway"], {**env, "GATEWAY_LOG_LEVEL": "info"}, ready="listening on")
        children.append(gateway)
        cookie = asyncio.run(sign_in(gateway_url))
        headers = ["Accept: text/html", f"Cookie: {cookie}"]
        wrk(f"{gateway_url}/warmup", duration=2, connections=args.connections, headers=headers)

        direct, proxied, cpu_per_1000 = [], [], []
        for _ in range(args.rounds):
            direct.append(
                wrk(
                    f"http://127.0.0.1:{upstream_port}/bench",
                    duration=args.duration,
                    connections=args.connections,
                    headers=headers,
                )
            )
            before = cpu_seconds(gateway.pid)
            spy = None
            if args.profile and not proxied:
                spy = subprocess.Popen(
                    [
                        "py-spy",
                        "record",
                        "--format",
                        "raw",
                        "-o",
                        args.profile,
                        "-p",
                        str(gateway.pid),
                        "-d",
                        str(args.duration),
                        "--nonblocking",
                    ],
                    stdout=subprocess.DEVNULL,
                )
            result = wrk(f"{gateway_url}/bench", duration=args.duration, connections=args.connections, headers=headers)
            cpu_per_1000.append((cpu_seconds(gateway.pid) - before) / result["requests"] * 1000)
            if spy is not None:
                spy.wait(30)
            proxied.append(result)
    finally:
        for child in children:
            child.send_signal(signal.SIGTERM)
        for child in children:
            child.wait(10)

    def median(rows: list[dict[str, float]], key: str) -> float:
        return statistics.median(row[key] for row in rows)

    print(f"wrk -t2 -c{args.connections} -d{args.duration}s, {args.rounds} alternating rounds, medians")
    print(f"{'':22}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    for name, rows in (("direct to upstream", direct), ("through the gateway", proxied)):
        print(f"{name:22}{median(rows, 'rps'):>10.0f}{median(rows, 'p50_ms'):>10.2f}{median(rows, 'p99_ms'):>10.2f}")
    print(f"gateway/direct req/s ratio: {median(proxied, 'rps') / median(direct, 'rps'):.2f}")
    print(f"gateway/direct p50 ratio:   {median(proxied, 'p50_ms') / median(direct, 'p50_ms'):.2f}")
    print(f"gateway CPU seconds per 1,000 authenticated requests: {statistics.median(cpu_per_1000):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
