"""A/B of gateway checkouts: each one's gateway (one worker) started side by side, measured in alternating rounds.

    .venv/bin/python bench/alternate.py CHECKOUT [CHECKOUT ...] [--mode redirect|auth|signin] [--rounds 4]
                                        [--seconds 4] [--sign-ins 60] [--env K=V ...]

One nginx (the 200-byte upstream), one dev_idp and a gateway per checkout, all up at once; then ``--rounds``
rounds, each measuring every gateway in turn (the order reverses every other round, so a drifting machine favours
none): ``redirect`` (wrk without a cookie: 302s per CPU-second), ``auth`` (wrk with a session cookie: requests per
CPU-second) or ``signin`` (browser-like sign-ins: the gateway's CPU milliseconds per sign-in). CPU is each
gateway's process tree. Prints each checkout's median, its ratio to the first checkout's and every round's figure.
Faster than ``compare.py`` for one change, and steadier than ``one_gateway.py`` runs one after another, because
the checkouts share every minute of the machine's noise.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
from pathlib import Path

import browser
import gateways
import peers
from load import Load, run_wrk
from procs import Child, free_port, tree_cpu_seconds

HTML = "Accept: text/html"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkouts", type=Path, nargs="+")
    parser.add_argument("--mode", default="redirect", choices=("redirect", "auth", "signin"))
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=4, help="seconds of wrk per measurement")
    parser.add_argument("--sign-ins", type=int, default=60, help="sign-ins per measurement (--mode signin)")
    parser.add_argument("--env", action="append", default=[], metavar="K=V", help="extra gateway environment")
    return parser.parse_args(argv)


class Target:
    """One checkout's running gateway, what wrk sends it, and its figures so far."""

    def __init__(self, checkout: Path, gateway: Child, origin: str, headers: list[str]) -> None:
        self.checkout, self.gateway, self.origin, self.headers = checkout, gateway, origin, headers
        self.figures: list[float] = []

    def measure(self, args: argparse.Namespace) -> None:
        before = tree_cpu_seconds(self.gateway.pid)
        if args.mode == "signin":
            browser.sign_ins(self.origin, gateways.COOKIE_PREFIX, args.sign_ins)
            self.figures.append((tree_cpu_seconds(self.gateway.pid) - before) * 1000 / args.sign_ins)
            return
        result = run_wrk(Load(duration=args.seconds, connections=50), f"{self.origin}/bench", self.headers)
        self.figures.append(result["requests"] / (tree_cpu_seconds(self.gateway.pid) - before))


def start(args: argparse.Namespace, stack: contextlib.ExitStack) -> list[Target]:
    workdir = Path(tempfile.mkdtemp(prefix="alternate-"))
    upstream, idp = free_port(), free_port()
    ports = [free_port() for _ in args.checkouts]
    stack.callback(peers.start_nginx(workdir, upstream).stop)
    callbacks = [f"http://127.0.0.1:{port}{gateways.CALLBACK_PATH}" for port in ports]
    stack.callback(gateways.start_idp(idp, gateways.write_directory(workdir / "users.json", callbacks)).stop)
    extra = dict(item.split("=", 1) for item in args.env)
    targets = []
    for checkout, port in zip(args.checkouts, ports, strict=True):
        env = gateways.gateway_env(
            port, "cookie", idp_port=idp, upstream=f"http://127.0.0.1:{upstream}", redis_url="redis://127.0.0.1:1/0"
        )
        gateway = gateways.start_gateway("gateway", checkout.resolve(), {**env, "GATEWAY_WORKERS": "1", **extra})
        stack.callback(gateway.stop)
        origin = f"http://127.0.0.1:{port}"
        cookie = browser.sign_ins(origin, gateways.COOKIE_PREFIX, 3)
        headers = [HTML, f"Cookie: {cookie}"] if args.mode == "auth" else [HTML]
        run_wrk(Load(duration=3, connections=50), f"{origin}/bench", headers)  # warm-up
        targets.append(Target(checkout, gateway, origin, headers))
    return targets


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    unit = "ms CPU per sign-in" if args.mode == "signin" else "per CPU-second"
    with contextlib.ExitStack() as stack:
        targets = start(args, stack)
        for round_ in range(args.rounds):
            for target in targets if round_ % 2 == 0 else reversed(targets):
                target.measure(args)
    first = statistics.median(targets[0].figures)
    for target in targets:
        median = statistics.median(target.figures)
        rounds = ", ".join(f"{figure:.2f}" if args.mode == "signin" else f"{figure:.0f}" for figure in target.figures)
        print(f"{target.checkout}: {args.mode} {median:.2f} {unit} ({median / first:.3f}x the first; rounds {rounds})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
