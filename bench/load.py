"""wrk runs with the proxy's CPU counted around them, and proof of what answered.

wrk counts 3xx as successes and reports only 4xx/5xx ("Non-2xx or 3xx responses"). So a run that was meant to
be authenticated but got 302s to the IdP would look like a fast success. The upstream's request counter settles
it: for an authenticated run every answer must have come from nginx (its counter grew by at least wrk's request
count); for an unauthenticated run none may have (the proxies answer the 302 themselves). A Lua ``response()``
hook in wrk would check statuses too, but it costs wrk more CPU per response than the proxies' differences.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

from peers import upstream_requests
from procs import tree_cpu_seconds


@dataclass(frozen=True)
class Load:
    """What wrk is asked to do: the same for every target of a run."""

    duration: int
    connections: int
    threads: int = 1

    def argv(self, url: str, headers: list[str], duration: int | None = None) -> list[str]:
        flags = [f"-t{self.threads}", f"-c{self.connections}", f"-d{duration or self.duration}s", "--latency"]
        return ["wrk", *flags, *[part for header in headers for part in ("-H", header)], url]


def run_wrk(load: Load, url: str, headers: list[str], duration: int | None = None) -> dict[str, float]:
    """One wrk run; fails loudly on 4xx/5xx answers. Latency in ms, socket errors summed over their kinds."""
    out = subprocess.run(load.argv(url, headers, duration), capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out:
        raise SystemExit(f"bench: 4xx/5xx answers from {url}:\n{out}")
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "rps": float(_field(r"Requests/sec:\s+([\d.]+)", out)),
        "requests": float(_field(r"(\d+) requests in", out)),
        "p50_ms": _latency("50", out),
        "p99_ms": _latency("99", out),
        "socket_errors": float(sum(int(n) for n in errors.groups())) if errors else 0.0,
    }


def _field(pattern: str, out: str) -> str:
    match = re.search(pattern, out)
    if match is None:
        raise SystemExit(f"bench: wrk output without {pattern!r}:\n{out}")
    return match.group(1)


def _latency(percentile: str, out: str) -> float:
    value, unit = re.search(rf"^\s+{percentile}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]


def measure(load: Load, url: str, headers: list[str], *, pid: int | None, upstream_port: int, proxied: bool):
    """A wrk run with the proxy tree's CPU around it; ``proxied`` says whether the upstream must answer all."""
    before_upstream = upstream_requests(upstream_port)
    before_cpu = tree_cpu_seconds(pid) if pid is not None else 0.0
    result = run_wrk(load, url, headers)
    cpu = tree_cpu_seconds(pid) - before_cpu if pid is not None else 0.0
    reached = upstream_requests(upstream_port) - before_upstream
    if proxied and reached < result["requests"]:
        missing = int(result["requests"] - reached)
        raise SystemExit(f"bench: {url}: {missing} of {result['requests']:.0f} answers did not come from the upstream")
    if not proxied and reached > 0:
        raise SystemExit(f"bench: {url}: {reached} unauthenticated requests reached the upstream")
    return {**result, "cpu_s": cpu, "per_cpu_s": result["requests"] / cpu if cpu > 0 else float("nan")}
