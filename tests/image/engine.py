"""A Docker engine for the image tests: the one that answers, or one started here and stopped afterwards.

Only a ``dockerd`` this module started is ever stopped, by its own process id. It is started with
``--bridge=none --iptables=false``: every container of these tests uses the host's network (all traffic stays on
loopback), so the engine needs no bridge and no firewall rules of its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

# The classic builder: Debian's docker.io has no buildx plugin, and a newer docker CLI without it refuses BuildKit.
DOCKER_ENV = {**os.environ, "DOCKER_BUILDKIT": "0", "COMPOSE_DOCKER_CLI_BUILD": "0"}


class EngineUnavailable(RuntimeError):
    """No engine answers and none could be started; the message says why."""


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, env=DOCKER_ENV, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result


class DockerEngine:
    def __init__(self, log_file: Path) -> None:
        self.log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None  # set only when this object started dockerd

    @staticmethod
    def answers() -> bool:
        if shutil.which("docker") is None:
            return False
        try:
            return docker("version", "--format", "{{.Server.Version}}", timeout=15, check=False).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def ensure(self, timeout: float = 60) -> str:
        """Use the running engine, or start one; returns which ("running" or "started")."""
        if self.answers():
            return "running"
        if shutil.which("docker") is None or shutil.which("dockerd") is None:
            raise EngineUnavailable("no docker/dockerd on PATH (apt-get install docker.io)")
        if os.geteuid() != 0:
            raise EngineUnavailable("dockerd must be started as root here")
        with self.log_file.open("wb") as log:
            self.process = subprocess.Popen(
                ["dockerd", "--bridge=none", "--iptables=false", "--ip6tables=false"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = self.log_file.read_text(errors="replace").splitlines()[-15:]
                raise EngineUnavailable("dockerd did not start:\n" + "\n".join(tail))
            time.sleep(0.5)
        return "started"

    def stop(self) -> None:
        """Stop the dockerd this object started (it stops its own containerd); nothing else."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None
