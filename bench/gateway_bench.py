"""Benchmark: authenticated requests through the gateway against the same upstream reached directly.

    .venv/bin/python bench/gateway_bench.py [--duration 10] [--connections 32] [--rounds 3] [--stores cookie,redis]
                                            [--baseline DIR]

It starts dev_idp, a minimal aiohttp upstream, a redis-server (for the Redis store) and one gateway per session
store on loopback, signs in once as alice on each, then runs wrk (Debian's ``wrk``) against the upstream directly
and through each gateway, in alternating rounds. It prints req/s and p50/p99 latency (medians over the rounds),
each gateway's CPU seconds per 1,000 requests (from /proc), and the gateway/direct ratios, which are what to
compare between machines: absolute figures on shared machines are noise. wrk sends the session cookie and
``Accept: text/html``, as a browser does. ``--baseline DIR`` adds the gateway of another checkout (e.g. a
``git worktree`` of the previous release) to the same rounds, so a change is measured before and after in one run.
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


def start(
    args: list[str], env: dict[str, str] | None = None, ready: str = "", cwd: Path = ROOT
) -> subprocess.Popen[str]:
    """Start a child and wait (30 s at most) for a line matching ``ready``; its output keeps being drained."""
    process = subprocess.Popen(
        [sys.executable, *args],
        cwd=cwd,
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
    parser.add_argument("--stores", default="cookie,redis", help="session stores to measure, comma-separated")
    parser.add_argument("--profile", metavar="SVG", help="record the gateway with py-spy during the first round")
    parser.add_argument("--baseline", type=Path, help="also run the gateway of this checkout, in the same rounds")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench: wrk is missing (apt-get install wrk)")

    store_names = [store.strip() for store in args.stores.split(",") if store.strip()]
    # target name -> (session store, checkout the gateway runs from)
    targets = {store: (store, ROOT) for store in store_names}
    if args.baseline is not None:
        targets |= {f"{store}, baseline": (store, args.baseline.resolve()) for store in store_names}
    stores = list(targets)
    upstream_port = free_port()
    gateway_ports = {store: free_port() for store in stores}
    users = ROOT / "bench" / "results" / "users.json"
    users.parent.mkdir(exist_ok=True)
    directory = json.loads((ROOT / "dev_idp" / "default_directory.json").read_text())
    directory["clients"][0]["callback_urls"] = [
        f"http://127.0.0.1:{port}/cognito_redirect" for port in gateway_ports.values()
    ]
    users.write_text(json.dumps(directory))

    children: list[subprocess.Popen[str]] = []
    gateways: dict[str, subprocess.Popen[str]] = {}
    try:
        idp_port = free_port()
        children.append(start(["-m", "dev_idp", "--port", str(idp_port), "--users", str(users)], ready=r"^# ready"))
        children.append(start(["bench/fast_upstream.py", str(upstream_port)], ready="# ready"))
        base_env = {
            "GATEWAY_PROVIDER": "cognito",
            "COGNITO_ISSUER": f"http://localhost:{idp_port}/local_devpool1",
            "COGNITO_CLIENT_ID": "gateway",
            "COGNITO_CLIENT_SECRET": "gateway-dev-secret-for-local-use-only",
            "GATEWAY_UPSTREAM": f"http://127.0.0.1:{upstream_port}",
            "GATEWAY_SESSION_SECRET": "dnZ/js812RQDSb1Qdi0JioX6KnZx3KBKhqAh67NUdZQ=",
        }
        if "redis" in store_names:
            redis_port = free_port()
            redis = subprocess.Popen(
                ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""],
                stdout=subprocess.DEVNULL,
            )
            children.append(redis)  # type: ignore[arg-type]
            time.sleep(0.5)
        headers: dict[str, list[str]] = {}
        for store, port in gateway_ports.items():
            env = {
                **base_env,
                "GATEWAY_PUBLIC_URL": f"http://127.0.0.1:{port}",
                "GATEWAY_LISTEN": f"127.0.0.1:{port}",
                "GATEWAY_SESSION_STORE": targets[store][0],
            }
            if targets[store][0] == "redis":
                env["GATEWAY_REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
            gateways[store] = start(["-m", "gateway"], env, ready="listening on", cwd=targets[store][1])
            children.append(gateways[store])
            cookie = asyncio.run(sign_in(f"http://127.0.0.1:{port}"))
            headers[store] = ["Accept: text/html", f"Cookie: {cookie}"]
            wrk(f"http://127.0.0.1:{port}/warmup", duration=2, connections=args.connections, headers=headers[store])

        direct: list[dict[str, float]] = []
        proxied: dict[str, list[dict[str, float]]] = {store: [] for store in stores}
        cpu_per_1000: dict[str, list[float]] = {store: [] for store in stores}
        for _ in range(args.rounds):
            direct.append(
                wrk(
                    f"http://127.0.0.1:{upstream_port}/bench",
                    duration=args.duration,
                    connections=args.connections,
                    headers=["Accept: text/html"],
                )
            )
            for store, port in gateway_ports.items():
                pid = gateways[store].pid
                before = cpu_seconds(pid)
                spy = None
                if args.profile and store == stores[0] and not proxied[store]:
                    spy = subprocess.Popen(
                        [
                            "py-spy",
                            "record",
                            "--format",
                            "raw",
                            "-o",
                            args.profile,
                            "-p",
                            str(pid),
                            "-d",
                            str(args.duration),
                            "--nonblocking",
                        ],
                        stdout=subprocess.DEVNULL,
                    )
                result = wrk(
                    f"http://127.0.0.1:{port}/bench",
                    duration=args.duration,
                    connections=args.connections,
                    headers=headers[store],
                )
                cpu_per_1000[store].append((cpu_seconds(pid) - before) / result["requests"] * 1000)
                proxied[store].append(result)
                if spy is not None:
                    spy.wait(30)
    finally:
        for child in children:
            child.send_signal(signal.SIGTERM)
        for child in children:
            child.wait(10)

    def median(rows: list[dict[str, float]], key: str) -> float:
        return statistics.median(row[key] for row in rows)

    print(f"wrk -t2 -c{args.connections} -d{args.duration}s, {args.rounds} alternating rounds, medians")
    print(f"{'':30}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'ratio':>8}{'CPU s/1k':>10}")
    direct_rps = median(direct, "rps")
    print(
        f"{'direct to upstream':30}{direct_rps:>9.0f}{median(direct, 'p50_ms'):>9.2f}{median(direct, 'p99_ms'):>9.2f}"
    )
    for store in stores:
        rows = proxied[store]
        print(
            f"{'gateway, ' + store + ' store':30}{median(rows, 'rps'):>9.0f}{median(rows, 'p50_ms'):>9.2f}"
            f"{median(rows, 'p99_ms'):>9.2f}{median(rows, 'rps') / direct_rps:>8.2f}"
            f"{statistics.median(cpu_per_1000[store]):>10.3f}"
        )
    print("ratio: gateway req/s / direct req/s in the same run; CPU s/1k: gateway CPU seconds per 1,000 requests")
    return 0


if __name__ == "__main__":
    sys.exit(main())
