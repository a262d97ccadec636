"""``GATEWAY_WORKERS``: several processes serving one port, and the supervisor that keeps them running.

With ``GATEWAY_WORKERS=1`` the gateway serves in its main process. With more, the main process becomes the
supervisor: it checks that the port can be bound (and keeps that bound, never listening, socket so the port stays
reserved), then forks the workers. Each worker builds its own app (``create_app``), binds its own listening socket
with SO_REUSEPORT, so the kernel spreads connections evenly over the workers, and serves. The supervisor:

- restarts a worker that dies, after a backoff that doubles (up to 30 s) while it keeps dying within 10 s;
- gives up (exit 1) when a worker reports that it cannot start at all (exit code 3: a socket it cannot bind, a
  certificate it cannot load), since restarting cannot cure a configuration;
- forwards SIGTERM and SIGINT to every worker, which drain (``server``); it exits 0 once all exited 0.

Every log line names its process: ``[supervisor]`` or ``[worker N]``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import Settings

log = logging.getLogger("gateway.workers")

EXIT_CANNOT_START = 3  # a worker's exit code for "this configuration cannot serve": not worth a restart
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
STABLE_AFTER = 10.0  # a worker that lived this long died of something else than its start


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity, bounded by a cgroup v2 CPU quota (a container's limit)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cpus = min(cpus, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    return max(cpus, 1)


@dataclasses.dataclass
class _Worker:
    number: int
    started: float
    quick_deaths: int = 0


class Supervisor:
    """Forks ``count`` workers running ``work(number)`` (its return value is the worker's exit code)."""

    def __init__(self, count: int, work: Callable[[int], int]) -> None:
        self.count = count
        self.work = work
        self.workers: dict[int, _Worker] = {}
        self.stopping = False
        self.failed = False

    def run(self) -> int:
        from .metrics import process_exited  # config imports this module: no import cycle at load time

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._stop)
        for number in range(1, self.count + 1):
            self._spawn(number, 0)
        while self.workers:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            process_exited(pid)  # its live gauges leave the metric sums; its counters stay
            worker = self.workers.pop(pid, None)
            if worker is not None:
                self._exited(worker, pid, os.waitstatus_to_exitcode(status))
        log.info("all workers exited")
        return 1 if self.failed else 0

    def _exited(self, worker: _Worker, pid: int, code: int) -> None:
        how = f"exit code {code}" if code >= 0 else f"signal {signal.Signals(-code).name}"
        if self.stopping:
            log.info("worker %d (pid %d) exited: %s", worker.number, pid, how)
            self.failed |= code != 0
        elif code == EXIT_CANNOT_START:
            log.error("worker %d cannot start (see its lines above); stopping", worker.number)
            self.failed = True
            self._stop(signal.SIGTERM, None)
        else:
            quick = time.monotonic() - worker.started < STABLE_AFTER
            deaths = worker.quick_deaths + 1 if quick else 0
            delay = min(BACKOFF_FIRST * 2 ** (deaths - 1), BACKOFF_MAX) if deaths else 0.0
            log.error("worker %d (pid %d) died (%s); restarting it in %.1fs", worker.number, pid, how, delay)
            time.sleep(delay)
            if not self.stopping:
                self._spawn(worker.number, deaths)

    def _spawn(self, number: int, quick_deaths: int) -> None:
        # Signals stay blocked across fork so that a SIGTERM cannot reach the child's copy of the supervisor's
        # handler (which would signal the siblings) before the child has put its own in place.
        blocked = {signal.SIGTERM, signal.SIGINT}
        signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
        pid = os.fork()
        if pid == 0:
            for signum in blocked:
                signal.signal(signum, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)
            os._exit(self._child(number))
        signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)
        self.workers[pid] = _Worker(number, time.monotonic(), quick_deaths)
        log.info("worker %d started (pid %d)", number, pid)

    def _child(self, number: int) -> int:
        try:
            return self.work(number)
        except BaseException:  # the worker's own logging has not failed; report and let the supervisor restart
            logging.getLogger("gateway").exception("worker %d failed", number)
            return 70  # EX_SOFTWARE

    def _stop(self, signum: int, _frame: object) -> None:
        if not self.stopping:
            log.info("%s: draining the workers", signal.Signals(signum).name)
        self.stopping = True
        for pid in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind (without listening) with SO_REUSEPORT: fails early if the port is taken, and resolves port 0."""
    from .server import listen_socket

    return listen_socket(host, port, listen=False)


def supervise(settings: Settings, serve_worker: Callable[[Settings, int, int], int]) -> int:
    from .server import configure_logging

    configure_logging(settings, "supervisor")
    try:
        reserved = reserve_port(settings.listen_host, settings.listen_port)
    except OSError as exc:
        where = f"{settings.listen_host}:{settings.listen_port}"
        print(f"cognito-gateway: cannot listen on GATEWAY_LISTEN={where}: {exc.strerror}", file=sys.stderr)
        return 1
    port = reserved.getsockname()[1]
    # Each worker says "listening on" once its own socket listens; the port is only reserved here.
    log.info("starting %d workers on %s:%s", settings.server.workers, settings.listen_host, port)

    def work(number: int) -> int:
        reserved.close()  # the worker's copy; the supervisor keeps the reservation
        return serve_worker(settings, number, port)

    return Supervisor(settings.server.workers, work).run()
