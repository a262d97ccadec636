"""Side-by-side benchmark: the same upstream direct, through a minimal aiohttp proxy, through Apache +
mod_auth_openidc and through the gateway (each session store), in interleaved rounds, with the issue's targets.

    .venv/bin/python bench/compare.py [--duration 10] [--connections 50] [--rounds 3] [--sign-ins 50]
                                      [--stores cookie,redis] [--baseline DIR] [--gateway-env K=V]
                                      [--apache-no-userinfo] [--quick] [--profile FILE]

Every round does, for each target in turn (the order reverses every other round, so drift on a shared machine
does not always favour the same target): N browser-like sign-ins (their proxy CPU per sign-in; the last one's
cookie is what wrk sends), then an authenticated wrk run (``Accept: text/html`` and the session cookie(s)), then
an unauthenticated one (``Accept: text/html``, no cookie: each proxy answers 302 to the IdP). CPU is the proxy's
whole process tree from /proc. The table holds medians over the rounds; ratios are gateway / mod_auth_openidc.
``--baseline DIR`` adds the gateway of another checkout to the same rounds (before/after in one run).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: the bench modules sit next to it

import apache
import browser
import gateways
import peers
import report
from facts import git_revision, machine_facts
from load import Load, measure, run_wrk
from procs import Child, free_port, http_status, tree_cpu_seconds

RESULTS = gateways.ROOT / "bench" / "results"
PEER = "Apache + mod_auth_openidc"
HTML = "Accept: text/html"


@dataclass
class Target:
    """One row of the table: something wrk can reach, and the process tree whose CPU it costs."""

    name: str
    kind: str  # direct | minimal | apache | gateway
    port: int = field(default_factory=free_port)
    store: str | None = None
    checkout: Path = gateways.ROOT  # the gateway's checkout
    cookie_prefix: str | None = None  # set for the targets that authenticate
    child: Child | None = None
    cookie: str = ""

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def authenticates(self) -> bool:
        return self.cookie_prefix is not None

    @property
    def pid(self) -> int | None:
        return self.child.pid if self.child is not None and self.kind != "direct" else None


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    parser.add_argument("--connections", type=int, default=50, help="wrk connections (default 50)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--sign-ins", type=int, default=50, help="sign-ins per target per round (default 50)")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of wrk per target before round 1")
    parser.add_argument("--stores", default="cookie,redis", help="gateway session stores, comma-separated")
    parser.add_argument("--baseline", type=Path, help="also run the gateway of this checkout, in the same rounds")
    parser.add_argument(
        "--gateway-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for every gateway (e.g. GATEWAY_WORKERS=2); repeatable",
    )
    parser.add_argument(
        "--apache-no-userinfo",
        action="store_true",
        help="give mod_auth_openidc dev_idp's discovery document minus userinfo_endpoint, so at sign-in it makes "
        "exactly the gateway's IdP calls (by default it also calls userinfo)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: defaults of 2 s runs, 2 rounds, 5 sign-ins, 1 s warm-up"
    )
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="after the rounds, record the first gateway with "
        "py-spy during one authenticated run (.svg: flame graph, else raw collapsed stacks)",
    )
    if parser.parse_known_args(argv)[0].quick:  # quick changes the defaults; options given still win
        parser.set_defaults(duration=2, rounds=2, sign_ins=5, warmup=1)
    return parser.parse_args(argv)


def check_tools(args: argparse.Namespace) -> None:
    """Fail before starting anything when a program the run needs is missing, saying how to get it."""
    needed = {"wrk": "apt-get install wrk", "nginx": "apt-get install nginx", "apache2": "apt-get install apache2"}
    if "redis" in args.stores:
        needed["redis-server"] = "apt-get install redis-server"
    if args.profile:
        needed["py-spy"] = ".venv/bin/pip install py-spy"
    missing = [f"{tool} ({hint})" for tool, hint in needed.items() if find_tool(tool) is None]
    if not (apache.MODULES / "mod_auth_openidc.so").exists():
        missing.append("mod_auth_openidc (apt-get install libapache2-mod-auth-openidc)")
    if args.baseline is not None and not (args.baseline / "gateway" / "__main__.py").exists():
        missing.append(f"a gateway checkout at --baseline {args.baseline}")
    if missing:
        raise SystemExit("bench: missing " + "; ".join(missing))


def find_tool(name: str) -> str | None:
    """On PATH, in /usr/sbin (apache2, when PATH lacks it) or next to this Python (py-spy in the venv)."""
    return shutil.which(name) or shutil.which(name, path=f"/usr/sbin:{Path(sys.executable).parent}")


def plan(args: argparse.Namespace) -> list[Target]:
    """The rows, in round order: the references, mod_auth_openidc, then each store's gateway (and its baseline
    right after it, so the pair compared before/after is measured back to back)."""
    targets = [
        Target("direct to nginx", "direct"),
        Target("minimal aiohttp proxy (no auth)", "minimal"),
        Target(PEER, "apache", cookie_prefix="mod_auth_openidc_session"),
    ]
    checkouts = {"": gateways.ROOT}
    if args.baseline is not None:
        checkouts[BASELINE] = args.baseline.resolve()
    for store in _stores(args):
        for suffix, checkout in checkouts.items():
            name = f"gateway, {store} store{suffix}"
            targets.append(
                Target(name, "gateway", store=store, checkout=checkout, cookie_prefix=gateways.COOKIE_PREFIX)
            )
    return targets


def _stores(args: argparse.Namespace) -> list[str]:
    return [store.strip() for store in args.stores.split(",") if store.strip()]


@dataclass
class Stack:
    """What the targets share: the upstream, the IdP, the Redis server."""

    upstream_port: int
    idp_port: int
    redis_port: int = field(default_factory=free_port)
    redis: Child | None = None

    @property
    def upstream(self) -> str:
        return f"http://127.0.0.1:{self.upstream_port}"


def start_all(targets: list[Target], args: argparse.Namespace, workdir: Path, stack: contextlib.ExitStack) -> Stack:
    """nginx, dev_idp (every proxy's callback registered), Redis if needed, then each target; all stopped at exit."""

    def keep(child: Child) -> Child:
        stack.callback(child.stop)
        return child

    shared = Stack(upstream_port=free_port(), idp_port=free_port())
    nginx = keep(peers.start_nginx(workdir, shared.upstream_port))
    callbacks = [f"{target.origin}{gateways.CALLBACK_PATH}" for target in targets if target.authenticates]
    keep(gateways.start_idp(shared.idp_port, gateways.write_directory(workdir / "users.json", callbacks)))
    if any(target.store == "redis" for target in targets):
        shared.redis = keep(peers.start_redis(shared.redis_port))
    for target in targets:
        if target.kind == "direct":
            target.port, target.child = shared.upstream_port, nginx
        else:
            target.child = keep(start_target(target, shared, workdir, args))
    return shared


def start_target(target: Target, shared: Stack, workdir: Path, args: argparse.Namespace) -> Child:
    extra_env = dict(item.split("=", 1) for item in args.gateway_env)
    if target.kind == "minimal":
        return peers.start_minimal_proxy(target.port, shared.upstream)
    if target.kind == "apache":
        metadata = f"{gateways.issuer(shared.idp_port)}/.well-known/openid-configuration"
        if args.apache_no_userinfo:
            apache.metadata_without_userinfo(gateways.issuer(shared.idp_port), workdir / peers.DISCOVERY_PATH[1:])
            metadata = f"{shared.upstream}{peers.DISCOVERY_PATH}"
        return apache.start(workdir / "apache", target.port, shared.upstream_port, metadata, gateways.CLIENT_SECRET)
    return gateways.start_gateway(target.name, target.checkout, _gateway_env(target, shared, extra_env))


def _gateway_env(target: Target, shared: Stack, extra: dict[str, str]) -> dict[str, str]:
    redis_url = f"redis://127.0.0.1:{shared.redis_port}/0"
    env = gateways.gateway_env(
        target.port, target.store or "cookie", idp_port=shared.idp_port, upstream=shared.upstream, redis_url=redis_url
    )
    return {**env, **extra}


def verify(target: Target, shared: Stack) -> None:
    """Before any figure counts: the cookie gets the upstream's page, no cookie gets a 302 to the IdP."""
    headers = {"Accept": "text/html", **({"Cookie": target.cookie} if target.cookie else {})}
    status, _, body = http_status(f"{target.origin}/bench", headers)
    if status != 200 or body != peers.BODY:
        raise SystemExit(f"bench: {target.name} answered {status} {body[:200]!r} to an authenticated request")
    if target.authenticates:
        status, answer, _ = http_status(f"{target.origin}/bench", {"Accept": "text/html"})
        location = answer.get("Location", "")
        if status != 302 or not location.startswith(f"http://localhost:{shared.idp_port}/"):
            raise SystemExit(f"bench: {target.name} answered {status} {location!r} without a session")


Rounds = report.Rounds
BASELINE = ", baseline"  # the suffix of a baseline gateway's row name


def headers(target: Target) -> list[str]:
    return [HTML, f"Cookie: {target.cookie}"] if target.cookie else [HTML]


def warm_up(targets: list[Target], shared: Stack, load: Load, seconds: int) -> None:
    """A few sign-ins and wrk runs per target first: JIT-free Python still fills caches, pools and allocators."""
    for target in targets:
        if target.authenticates:
            target.cookie = browser.sign_ins(target.origin, target.cookie_prefix or "", 3)
        verify(target, shared)
        run_wrk(load, f"{target.origin}/warmup", headers(target), duration=seconds)
        if target.authenticates:
            run_wrk(load, f"{target.origin}/warmup", [HTML], duration=seconds)
        progress(f"warmed up {target.name}")


def run_round(
    number: int, targets: list[Target], shared: Stack, load: Load, args: argparse.Namespace, rounds: Rounds
) -> None:
    """Sign-ins, then authenticated runs, then unauthenticated runs; every other round in reverse order."""
    order = targets if number % 2 == 0 else targets[::-1]
    for target in order:
        if target.authenticates:
            measure_sign_ins(target, shared, args.sign_ins, rounds[target.name])
    for target in order:
        measure_authenticated(target, shared, load, rounds[target.name])
        progress(f"round {number + 1}: {target.name}: {rounds[target.name]['rps'][-1]:.0f} req/s")
    for target in order:
        if target.authenticates:
            measure_redirects(target, shared, load, rounds[target.name])


def measure_authenticated(target: Target, shared: Stack, load: Load, figures: dict[str, list[float]]) -> None:
    """One wrk run with the session cookie (none for the targets without auth); every answer from the upstream."""
    redis_before = redis_cpu(shared, target)
    url, port = f"{target.origin}/bench", shared.upstream_port
    result = measure(load, url, headers(target), pid=target.pid, upstream_port=port, proxied=True)
    for key in ("rps", "p50_ms", "p99_ms", "per_cpu_s", "socket_errors", "cpu_s", "requests"):
        figures.setdefault(key, []).append(result[key])
    if target.store == "redis":
        figures.setdefault("redis_cpu_s", []).append(redis_cpu(shared, target) - redis_before)


def measure_redirects(target: Target, shared: Stack, load: Load, figures: dict[str, list[float]]) -> None:
    """One wrk run without a cookie: every answer a 302 from the proxy itself, none from the upstream."""
    url, port = f"{target.origin}/bench", shared.upstream_port
    result = measure(load, url, [HTML], pid=target.pid, upstream_port=port, proxied=False)
    figures.setdefault("redirects_per_cpu_s", []).append(result["per_cpu_s"])
    figures.setdefault("redirects_rps", []).append(result["rps"])
    progress(f"{target.name}, no cookie: {result['per_cpu_s']:.0f} 302s/CPU-s")


def measure_sign_ins(target: Target, shared: Stack, count: int, figures: dict[str, list[float]]) -> None:
    """``count`` full sign-ins; only the proxy tree's CPU counts (dev_idp's and the client's do not)."""
    assert target.pid is not None
    cpu_before, wall_before = tree_cpu_seconds(target.pid), time.monotonic()
    target.cookie = browser.sign_ins(target.origin, target.cookie_prefix or "", count)
    figures.setdefault("cookie_bytes", []).append(len(target.cookie))
    cpu, wall = tree_cpu_seconds(target.pid) - cpu_before, time.monotonic() - wall_before
    figures.setdefault("signin_cpu_ms", []).append(cpu / count * 1000)
    figures.setdefault("signin_wall_ms", []).append(wall / count * 1000)
    verify(target, shared)
    progress(f"{target.name}: {count} sign-ins, {cpu / count * 1000:.2f} ms proxy CPU each")


def redis_cpu(shared: Stack, target: Target) -> float:
    return tree_cpu_seconds(shared.redis.pid) if shared.redis is not None and target.store == "redis" else 0.0


def progress(message: str) -> None:
    print(f"# {message}", file=sys.stderr, flush=True)


def profile(target: Target, shared: Stack, load: Load, path: str) -> None:
    """One extra authenticated run under py-spy, after the rounds, so sampling never perturbs a counted figure."""
    assert target.pid is not None
    fmt = "flamegraph" if path.endswith(".svg") else "raw"
    spy = subprocess.Popen(
        [
            find_tool("py-spy") or "py-spy",
            "record",
            "--subprocesses",
            "--nonblocking",
            "--format",
            fmt,
            "-o",
            path,
            "-d",
            str(load.duration),
            "-p",
            str(target.pid),
        ],
        stdout=subprocess.DEVNULL,
    )
    run_wrk(load, f"{target.origin}/bench", headers(target))
    spy.wait(60)
    progress(f"py-spy profile of {target.name}: {path}")


def summarise(targets: list[Target], rounds: Rounds, args: argparse.Namespace, facts: dict[str, str]) -> list[str]:
    """The printed report: the table, the issue's targets, before/after against a baseline, the facts."""
    rows = {name: report.medians(figures) for name, figures in rounds.items()}
    load = f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s --latency"
    lines = [f"{load}, {args.rounds} interleaved rounds, medians; {args.sign_ins} sign-ins per target per round", ""]
    lines += report.table(rows)
    lines += [
        "",
        "req/CPU-s and 302s/CPU-s: answers per CPU-second of the proxy's whole process tree; "
        "sign-in CPU ms: the proxy tree's CPU per full browser-like sign-in",
    ]
    lines += redis_lines(rounds)
    lines += [
        f"{t.name}: wrk sends {rows[t.name]['cookie_bytes']:.0f} bytes of session cookie" for t in targets if t.cookie
    ]
    userinfo = "without userinfo (--apache-no-userinfo)" if args.apache_no_userinfo else "calls userinfo"
    lines.append(f"mod_auth_openidc at sign-in: {userinfo}; gateway extra env: {args.gateway_env or 'none'}")
    ours = {t.name: t.store or "" for t in targets if t.kind == "gateway" and not t.name.endswith(BASELINE)}
    lines += ["", "issue targets (gateway / mod_auth_openidc, same run; ratios of the medians):"]
    lines += report.ratio_lines(PEER, ours, rounds, BASELINE)
    baselines = {name: name + BASELINE for name in ours if name + BASELINE in rows}
    if baselines:
        lines += ["", "this checkout / baseline (ratios of medians):", *report.change_lines(baselines, rows)]
    lines += ["", "machine:", *[f"  {key}: {value}" for key, value in facts.items()]]
    return lines


def redis_lines(rounds: Rounds) -> list[str]:
    """The Redis store's CPU lives partly in redis-server, outside the gateway's tree: show it beside the figure."""
    lines = []
    for name, figures in rounds.items():
        if figures.get("redis_cpu_s"):
            with_redis = [
                n / (cpu + redis)
                for n, cpu, redis in zip(figures["requests"], figures["cpu_s"], figures["redis_cpu_s"], strict=True)
            ]
            share = sum(figures["redis_cpu_s"]) / sum(figures["cpu_s"])
            lines.append(
                f"{name}: redis-server adds {share:.0%} to the gateway's CPU; counting it too, "
                f"{statistics.median(with_redis):.0f} req/CPU-s"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    check_tools(args)
    # A SIGTERM unwinds like Ctrl-C, so every child (each in its own session) is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    command = shlex.join([sys.executable, *sys.argv])
    facts = {**machine_facts(), "gateway checkout": git_revision(gateways.ROOT)}
    if args.baseline is not None:
        facts["baseline checkout"] = f"{args.baseline.resolve()} at {git_revision(args.baseline)}"
    load = Load(duration=args.duration, connections=args.connections, threads=args.threads)
    targets = plan(args)
    rounds: Rounds = {target.name: {} for target in targets}
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp, contextlib.ExitStack() as stack:
        shared = start_all(targets, args, Path(tmp), stack)
        warm_up(targets, shared, load, args.warmup)
        for number in range(args.rounds):
            run_round(number, targets, shared, load, args, rounds)
        if args.profile:
            profile(next(t for t in targets if t.kind == "gateway"), shared, load, args.profile)
    facts["load average at the end (1 min, the bench's own load included)"] = f"{os.getloadavg()[0]:.2f}"
    lines = summarise(targets, rounds, args, facts)
    lines += ["", f"command: {command}"]
    print("\n".join(lines))
    document = {
        "command": command,
        "facts": facts,
        "load": vars(load),
        "rounds": rounds,
        "medians": {name: report.medians(figures) for name, figures in rounds.items()},
        "report": lines,
    }
    saved = report.save(RESULTS / f"compare-{time.strftime('%Y%m%d-%H%M%S')}.json", document)
    print(f"saved: {saved.relative_to(gateways.ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
