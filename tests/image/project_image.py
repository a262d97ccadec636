"""The project's own Dockerfile, built on the local base, with pip inside the build using this machine's index.

The host's pip configuration (``pip config list``: files and ``PIP_*`` variables) goes in as build args of the
build stage: the index URLs that are reachable from a container on the host's network (``--network host``), the
timeout, and the CA bundle (installed at the same path by the base's test layer). Local-only entries (``file:``
indexes, ``find-links`` directories, constraint files) do not exist inside the build and are left out; what was
passed and what was left out is reported.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time

from ..support import ROOT
from .base_image import CA_PATH, LABEL
from .engine import docker

IMAGE = "cognito-gateway:image-test"
_CONFIG_LINE = re.compile(r"^(?:[\w-]*|:env:)\.([\w-]+)='(.*)'$")


def host_pip_config() -> dict[str, str]:
    """``pip config list`` as {option: value}; ``:env:`` (PIP_* variables) overrides the files, as in pip."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=60, check=True
    )
    files: dict[str, str] = {}
    env: dict[str, str] = {}
    for line in result.stdout.splitlines():
        match = _CONFIG_LINE.match(line.strip())
        if match:
            (env if line.startswith(":env:") else files)[match.group(1)] = match.group(2)
    return {**files, **env}


def pip_build_args(config: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """Build args for the Dockerfile's build stage, and the options left out (with why)."""
    args: dict[str, str] = {}
    left_out = []
    for option, variable in (("index-url", "PIP_INDEX_URL"), ("extra-index-url", "PIP_EXTRA_INDEX_URL")):
        urls = config.get(option, "").split()
        reachable = [url for url in urls if url.startswith(("http://", "https://"))]
        left_out += [f"{option} {url} (not reachable from a container)" for url in urls if url not in reachable]
        if reachable:
            args[variable] = " ".join(reachable)
    if "default-timeout" in config:
        args["PIP_DEFAULT_TIMEOUT"] = config["default-timeout"]
    if "cert" in config:
        args["PIP_CERT"] = CA_PATH  # the base's test layer put the host's bundle there
    left_out += [f"{option} (a path on this machine)" for option in ("find-links", "constraint") if option in config]
    return args, left_out


def build(base_tag: str, build_args: dict[str, str]) -> float:
    """``docker build`` the project on ``base_tag``, from scratch (no layer cache); returns the seconds it took."""
    previous = docker("image", "inspect", "--format", "{{.Id}}", IMAGE, check=False).stdout.strip()
    command = ["build", "--no-cache", "--network", "host", "--build-arg", f"BASE_IMAGE={base_tag}"]
    for name, value in build_args.items():
        command += ["--build-arg", f"{name}={value}"]
    started = time.monotonic()
    docker(*command, "-t", IMAGE, str(ROOT), timeout=900)
    seconds = time.monotonic() - started
    current = docker("image", "inspect", "--format", "{{.Id}}", IMAGE).stdout.strip()
    if previous and previous != current:
        docker("rmi", previous, check=False)
    # The untagged build stages of this and earlier runs (they carry the base's label): nothing else is pruned.
    docker("image", "prune", "--force", "--filter", f"label={LABEL}", check=False)
    return seconds
