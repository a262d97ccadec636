"""Child processes for the bench: start them, know when they serve, count their CPU, stop them.

CPU is counted per process *tree* because the proxies measured are not one process each: Apache's event MPM
answers from child processes, and the gateway may run worker processes (``GATEWAY_WORKERS``). Counting the main
pid alone would credit a multi-process proxy with almost no CPU.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import queue
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A loopback port nobody listens on now (the small race with other programs is acceptable for a bench)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Child:
    """A started program whose output is drained (a full pipe would stall it) and kept for error messages."""

    def __init__(self, name: str, argv: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None):
        self.name = name
        self.process = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: a stop reaches the children it forks too
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.tail: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _drain(self) -> None:
        for line in self.process.stdout:  # type: ignore[union-attr]
            self.lines.put(line)
            self.tail = [*self.tail[-40:], line]

    def wait_for_line(self, pattern: str, timeout: float = 30) -> str:
        """The first output line matching ``pattern``; fails loudly when the child dies or stays silent."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                self.check_alive()
                continue
            if re.search(pattern, line):
                return line
        raise SystemExit(f"bench: {self.name} printed no line matching {pattern!r} within {timeout} s{self.output()}")

    def wait_for_http(self, url: str, timeout: float = 30) -> None:
        """Poll ``url`` until it answers at all (any status): the child serves from then on."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                http_status(url)
                return
            except OSError:
                time.sleep(0.1)
        raise SystemExit(f"bench: {self.name} did not answer {url} within {timeout} s{self.output()}")

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise SystemExit(f"bench: {self.name} exited with status {self.process.returncode}{self.output()}")

    def output(self) -> str:
        time.sleep(0.2)  # let the drain thread catch the last lines
        return ":\n" + "".join(self.tail[-40:]) if self.tail else " (no output)"

    def stop(self) -> None:
        """SIGTERM to its process group, then SIGKILL after 10 s: nothing it started outlives the bench."""
        if self.process.poll() is None:
            _signal_group(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                _signal_group(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def http_status(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One GET without following redirects: the status, headers and body exactly as the server answered."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    try:
        connection.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""), headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds used so far by ``pid`` and every live descendant, plus what each of them has reaped.

    Live threads count at nanosecond precision (``/proc/PID/task/TID/schedstat``): utime/stime come in 10 ms ticks,
    which is most of a sign-in's CPU. Children that exited and were reaped count through their parent's
    cutime+cstime (ticks), which keeps the sum right when a proxy replaces a child mid-run (Apache retires idle
    children). What this misses: a thread that exits while a live process goes on, which none of the measured
    proxies does in steady state.
    """
    return sum(_process_cpu(member) for member in _tree(pid))


def _process_cpu(pid: int) -> float:
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    reaped = (int(fields[13]) + int(fields[14])) / CLK_TCK
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
        live = sum(int((task / "schedstat").read_text().split()[0]) for task in tasks) / 1e9
    except (FileNotFoundError, ProcessLookupError, PermissionError, ValueError, IndexError):
        live = (int(fields[11]) + int(fields[12])) / CLK_TCK  # no schedstat: the ticks, coarser but whole
    return live + reaped


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    members, pending = [], [root]
    while pending:
        pid = pending.pop()
        members.append(pid)
        pending += children.get(pid, [])
    return members


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name (which may contain spaces): fields[0] is the state, [1] the ppid."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
