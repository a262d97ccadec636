"""The project's image, built from its own Dockerfile on a base made from Debian's packages, then run.

It runs as the non-root user, its HEALTHCHECK turns healthy, ``python -m gateway`` refuses a bad configuration
with exit 2, nothing of the build's pip configuration is left in it, and its size is reported.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from ..stack import SESSION_SECRET
from ..support import free_port
from .conftest import record
from .engine import docker

pytestmark = pytest.mark.image


def test_the_image_runs_as_the_non_root_user(image: str) -> None:
    config = json.loads(docker("image", "inspect", image).stdout)[0]["Config"]
    assert config["User"] == "10001"
    result = docker("run", "--rm", "--network", "host", image, "id", "-u")
    assert result.stdout.strip() == "10001"


@pytest.fixture
def running_gateway(image: str) -> Iterator[tuple[str, int]]:
    """The image's default command with a valid configuration; the IdP it names is not running (not needed for
    /oauth2/healthz, which answers while the gateway keeps retrying discovery)."""
    port = free_port()
    env = {
        "COGNITO_ISSUER": f"http://127.0.0.1:{free_port()}/local_devpool1",
        "COGNITO_CLIENT_ID": "gateway",
        "GATEWAY_UPSTREAM": "http://127.0.0.1:9",
        "GATEWAY_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "GATEWAY_LISTEN": f"127.0.0.1:{port}",
        "GATEWAY_SESSION_SECRET": SESSION_SECRET,
    }
    flags = [arg for name, value in env.items() for arg in ("-e", f"{name}={value}")]
    container = docker("run", "--detach", "--network", "host", *flags, image).stdout.strip()
    try:
        yield container, port
    finally:
        docker("rm", "--force", container, check=False)


def test_its_healthcheck_turns_healthy(running_gateway: tuple[str, int]) -> None:
    container, _ = running_gateway
    started = time.monotonic()
    status = ""
    while time.monotonic() - started < 120:
        state = json.loads(docker("inspect", "--format", "{{json .State}}", container).stdout)
        assert state["Running"], docker("logs", container, check=False).stderr[-3000:]
        status = state["Health"]["Status"]
        if status == "healthy":
            break
        assert status != "unhealthy", state["Health"]["Log"]
        time.sleep(1)
    assert status == "healthy", docker("logs", container, check=False).stderr[-3000:]
    record("healthy_after_s (HEALTHCHECK interval 15 s)", round(time.monotonic() - started, 1))


def test_a_bad_configuration_exits_2_naming_every_bad_variable(image: str) -> None:
    bad = {"GATEWAY_UPSTREAM": "not-a-url", "GATEWAY_SESSION_SECRET": "s3cret-but-short", "GATEWAY_LISTEN": "8000"}
    flags = [arg for name, value in bad.items() for arg in ("-e", f"{name}={value}")]
    result = docker("run", "--rm", "--network", "host", *flags, image, check=False)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("cognito-gateway: invalid configuration:")
    for name in [*bad, "COGNITO_CLIENT_ID", "GATEWAY_PUBLIC_URL"]:
        assert name in result.stderr
    assert "s3cret-but-short" not in result.stderr, "the secret's value is not printed"


def test_no_build_configuration_is_left_in_the_image(image: str) -> None:
    config = json.loads(docker("image", "inspect", image).stdout)[0]["Config"]
    assert not [variable for variable in config["Env"] if variable.startswith("PIP_")], config["Env"]
    history = docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", image).stdout
    assert "PIP_INDEX_URL" not in history and "PIP_CERT" not in history, "build args stay in the build stage"
    result = docker(
        "run", "--rm", "--network", "host", image, "python", "-c", "import os; print(os.path.exists('/src'))"
    )
    assert result.stdout.strip() == "False", "the build stage's sources are not copied"


def test_the_image_size_is_reported(image: str) -> None:
    size = int(docker("image", "inspect", "--format", "{{.Size}}", image).stdout)
    record("image_size_mb", round(size / 1e6, 1))
    assert size < 400e6, "an unexpectedly large image: check what the final stage copies"
