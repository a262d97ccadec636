"""One gateway, one measurement: for A/B comparisons of a change and for profiles, faster than ``compare.py``.

    .venv/bin/python bench/one_gateway.py CHECKOUT [--store cookie|redis] [--mode auth|redirect|signin]
                                          [--seconds 8] [--sign-ins 200] [--profile FILE] [--rate 250] [K=V ...]

Starts nginx (the 200-byte upstream), dev_idp, Redis when asked and the gateway of CHECKOUT (one worker unless
``GATEWAY_WORKERS=N`` is given among the K=V settings), signs in three times, warms up, then measures one of:
``auth`` (wrk with the session cookie: req/s, p99, requests per CPU-second of the gateway's process tree),
``redirect`` (wrk without a cookie: 302s per CPU-second) or ``signin`` (browser-like sign-ins: the gateway's CPU
milliseconds per sign-in). ``--profile FILE`` records the run with py-spy (raw collapsed stacks). Run it on two
checkouts alternately, several times, and compare ratios: the machine's other load moves absolute figures.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import browser
import gateways
import peers
from load import Load, run_wrk
from procs import free_port, tree_cpu_seconds

HTML = "Accept: text/html"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkout", type=Path)
    parser.add_argument("--store", default="cookie", choices=("cookie", "redis"))
    parser.add_argument("--mode", default="auth", choices=("auth", "redirect", "signin"))
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--sign-ins", type=int, default=200)
    parser.add_argument("--profile", help="py-spy raw output file")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("env", nargs="*", metavar="K=V", help="extra gateway environment")
    return parser.parse_args(argv)


def spy(args: argparse.Namespace, pid: int) -> subprocess.Popen[bytes] | None:
    if args.profile is None:
        return None
    tool = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    argv = [tool, "record", "--subprocesses", "--nonblocking", "--format", "raw", "-r", str(args.rate)]
    argv += ["-o", args.profile, "-d", str(args.seconds), "-p", str(pid)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure(args: argparse.Namespace, origin: str, pid: int, cookie: str) -> str:
    before = tree_cpu_seconds(pid)
    if args.mode == "signin":
        browser.sign_ins(origin, gateways.COOKIE_PREFIX, args.sign_ins)
        return f"{(tree_cpu_seconds(pid) - before) * 1000 / args.sign_ins:.2f} ms gateway CPU per sign-in"
    headers = [HTML, f"Cookie: {cookie}"] if args.mode == "auth" else [HTML]
    result = run_wrk(Load(duration=args.seconds, connections=50), f"{origin}/bench", headers)
    per_cpu = result["requests"] / (tree_cpu_seconds(pid) - before)
    return f"{result['rps']:.0f} req/s, p99 {result['p99_ms']:.1f} ms, {per_cpu:.0f} req/CPU-s"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    workdir = Path(tempfile.mkdtemp(prefix="one-gateway-"))
    with contextlib.ExitStack() as stack:
        upstream, idp, port, redis_port = free_port(), free_port(), free_port(), free_port()
        stack.callback(peers.start_nginx(workdir, upstream).stop)
        callbacks = [f"http://127.0.0.1:{port}{gateways.CALLBACK_PATH}"]
        stack.callback(gateways.start_idp(idp, gateways.write_directory(workdir / "users.json", callbacks)).stop)
        if args.store == "redis":
            stack.callback(peers.start_redis(redis_port).stop)
        env = gateways.gateway_env(
            port,
            args.store,
            idp_port=idp,
            upstream=f"http://127.0.0.1:{upstream}",
            redis_url=f"redis://127.0.0.1:{redis_port}/0",
        )
        env = {**env, "GATEWAY_WORKERS": "1", **dict(item.split("=", 1) for item in args.env)}
        gateway = gateways.start_gateway("gateway", args.checkout.resolve(), env)
        stack.callback(gateway.stop)
        origin = f"http://127.0.0.1:{port}"
        cookie = browser.sign_ins(origin, gateways.COOKIE_PREFIX, 3)
        run_wrk(Load(duration=3, connections=50), f"{origin}/bench", [HTML, f"Cookie: {cookie}"])
        profiler = spy(args, gateway.pid)
        print(f"{args.checkout} {args.store} {args.mode}: {measure(args, origin, gateway.pid, cookie)}")
        if profiler is not None:
            profiler.wait(60)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
