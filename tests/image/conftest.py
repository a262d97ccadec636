"""Fixtures of the image tests (``make image-test``; deselected from ``make test`` by the ``image`` marker).

``engine``: a Docker engine that answers, started here if need be and then stopped at the end. ``base``: the
cached local base image. ``image``: the project's image, built from scratch on it. Every figure (image size,
build and start-up times) is printed at the end of the run and written to ``test-artifacts/image-test.json``.
Without what they need these tests are skipped with the reason; with ``CI=true`` they fail instead.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..support import ROOT
from . import base_image, project_image
from .engine import DockerEngine, EngineUnavailable

ARTIFACTS = ROOT / "test-artifacts"
FIGURES: dict[str, Any] = {}


def unavailable(reason: str) -> None:
    """Skip, visibly; under CI=true fail, so that CI cannot pass without having run the image tests."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and the image tests cannot run: {reason}")
    pytest.skip(reason)


def record(name: str, value: Any) -> None:
    FIGURES[name] = value


@pytest.fixture(scope="session")
def engine() -> Iterator[DockerEngine]:
    ARTIFACTS.mkdir(exist_ok=True)
    docker_engine = DockerEngine(ARTIFACTS / "dockerd.log")
    try:
        started = time.monotonic()
        record("docker_engine", docker_engine.ensure())
        record("docker_engine_start_s", round(time.monotonic() - started, 1))
    except EngineUnavailable as exc:
        unavailable(f"no Docker engine: {exc}")
    try:
        yield docker_engine
    finally:
        docker_engine.stop()


@pytest.fixture(scope="session")
def base(engine: DockerEngine) -> str:
    ca_bundle = Path(
        project_image.host_pip_config().get("cert") or os.environ.get("SSL_CERT_FILE") or base_image.CA_PATH
    )
    release = base_image.debian_release()
    tag = base_image.cache_tag(release, ca_bundle)
    record("base_image", tag)
    if base_image.exists(tag):
        record("base_image_cached", True)
        return tag
    started = time.monotonic()
    try:
        base_image.build_base(tag, release, ca_bundle)
    except FileNotFoundError as exc:
        unavailable(str(exc))
    record("base_image_cached", False)
    record("base_image_build_s", round(time.monotonic() - started, 1))
    return tag


@pytest.fixture(scope="session")
def image(base: str) -> str:
    build_args, left_out = project_image.pip_build_args(project_image.host_pip_config())
    record("pip_build_args", sorted(build_args))
    record("pip_config_left_out", left_out)
    record("image_build_s", round(project_image.build(base, build_args), 1))
    return project_image.IMAGE


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "image-test.json").write_text(json.dumps(FIGURES, indent=2) + "\n")
    terminalreporter.section("image test figures")
    for name, value in FIGURES.items():
        terminalreporter.write_line(f"{name}: {value}")
