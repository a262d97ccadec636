"""The machine and software a run was measured on, printed with every table.

Figures from shared 2-core machines only mean something next to the versions and the load they came from, so a
table without these facts cannot be compared with another one.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path


def _run(argv: list[str]) -> str:
    """stdout and stderr of a version command, first line; "missing" when the program is not there."""
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return "missing"
    lines = (result.stdout + result.stderr).strip().splitlines()
    return lines[0].strip() if lines else "unknown"


def _package(name: str) -> str:
    return _run(["dpkg-query", "-W", "-f=${Version}", name]) or "not installed"


def _cpu_model() -> str:
    match = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
    return match.group(1).strip() if match else platform.processor() or "unknown"


def git_revision(checkout: Path) -> str:
    """Short commit of a checkout, with "+dirty" when its work tree has uncommitted changes."""
    commit = _run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", str(checkout), "status", "--porcelain"], capture_output=True, text=True)
    return commit + ("+dirty" if dirty.stdout.strip() else "")


def busy_fraction(seconds: float = 1.0) -> float:
    """How busy all CPUs are right now (0..1), from /proc/stat over ``seconds``: before the bench starts
    anything, that is other people's work. The load average would be no use here: it decays over minutes and
    still carries the previous run's load."""

    def sample() -> tuple[int, int]:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = values[3] + values[4]  # idle + iowait
        return sum(values[:8]), idle

    total_before, idle_before = sample()
    time.sleep(seconds)
    total_after, idle_after = sample()
    total = total_after - total_before
    return 1 - (idle_after - idle_before) / total if total else 0.0


def machine_facts() -> dict[str, str]:
    busy = busy_fraction()
    return {
        "nproc": str(os.cpu_count()),
        "cpu": _cpu_model(),
        "kernel": platform.release(),
        "CPU busy before the run (others' work, 1 s sample)": f"{busy:.0%} of all CPUs",
        "apache2": _run(["/usr/sbin/apache2", "-v"]).removeprefix("Server version: "),
        "mod_auth_openidc (Debian package)": _package("libapache2-mod-auth-openidc"),
        "nginx": _run(["nginx", "-v"]).removeprefix("nginx version: "),
        "wrk": _run(["wrk", "-v"]),
        "redis-server": _run(["redis-server", "--version"]),
        "python": sys.version.split()[0],
        "aiohttp": metadata.version("aiohttp"),
    }
