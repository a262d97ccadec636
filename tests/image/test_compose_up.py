"""``docker compose up`` with the project's docker-compose.yml on the image built here; Chromium signs in as alice.

The compose file is the project's own with only what running here needs changed, in a derived copy: the image
built by these tests, and host networking (no registry and no traffic off loopback on this machine). Debian's
docker-compose 1.29 refuses ``network_mode: host`` beside ``ports`` and an override file cannot remove
``ports``, so the copy drops ``ports``/``expose``/``build``, binds 127.0.0.1 instead of 0.0.0.0 and names the
services by 127.0.0.1. Everything else (commands, environment, health checks, dependencies) is as the user gets it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from ..support import CHROMIUM, ROOT, launch_chromium
from ..test_compose import on_loopback
from .conftest import ARTIFACTS, record, unavailable
from .engine import DOCKER_ENV, docker

pytestmark = pytest.mark.image

PROJECT = "cgw-image-test"
PORTS = (8000, 9000, 5000)


def host_network_variant(compose: dict, image: str) -> dict:
    services = {}
    for name, service in compose["services"].items():
        changed = {key: value for key, value in service.items() if key not in ("ports", "expose", "build")}
        changed["image"] = image
        changed["network_mode"] = "host"
        if "command" in changed:
            changed["command"] = [on_loopback(str(arg)) for arg in changed["command"]]
        if "environment" in changed:
            changed["environment"] = {key: on_loopback(str(v)) for key, v in changed["environment"].items()}
        services[name] = changed
    return {**compose, "services": services}


class Compose:
    def __init__(self, tool: list[str], file: Path) -> None:
        self.tool = tool
        self.file = file
        # Compose's own ${VAR:-default}s apply, as for a user without a .env: none of this run's settings leak in.
        self.env = {k: v for k, v in DOCKER_ENV.items() if not k.startswith(("COGNITO_", "GATEWAY_", "DEV_IDP_"))}

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        command = [*self.tool, "--project-name", PROJECT, "--file", str(self.file), *args]
        result = subprocess.run(command, capture_output=True, text=True, env=self.env, timeout=timeout, check=False)
        assert result.returncode == 0, f"{' '.join(args)}: {result.stderr[-3000:]}"
        return result

    def containers(self) -> list[str]:
        label = f"label=com.docker.compose.project={PROJECT}"
        return docker("ps", "--all", "--quiet", "--filter", label).stdout.split()

    def assert_own_services_answer(self) -> None:
        """The answers came from this project's containers, not from another program on the same ports."""
        for container in self.containers():
            info = json.loads(docker("inspect", container).stdout)[0]
            logs = docker("logs", container).stderr + docker("logs", container).stdout
            if "Address already in use" in logs:
                unavailable(f"another program took {PORTS} while the test ran (another `make test` or demo?)")
            assert info["State"]["Running"] and info["RestartCount"] == 0, (info["Name"], info["State"], logs[-2000:])

    def logs(self, service: str) -> str:
        result = self.run("logs", "--no-color", service)
        return result.stdout + result.stderr

    def health(self) -> dict[str, str]:
        states = {}
        for container in self.containers():
            info = json.loads(docker("inspect", container).stdout)[0]
            service = info["Config"]["Labels"]["com.docker.compose.service"]
            states[service] = (info["State"].get("Health") or {}).get("Status", info["State"]["Status"])
        return states


def compose_tool() -> list[str] | None:
    if docker("compose", "version", check=False).returncode == 0:
        return ["docker", "compose"]
    tool = shutil.which("docker-compose")
    return [tool] if tool else None


def _port_taken(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def compose(image: str, tmp_path: Path) -> Iterator[Compose]:
    tool = compose_tool()
    if tool is None:
        unavailable("no docker compose or docker-compose (apt-get install docker-compose)")
    taken = [port for port in PORTS if _port_taken(port)]
    if taken:
        unavailable(f"ports {taken} are in use (is `make demo` running?); the compose services need {PORTS}")
    assert tool is not None
    variant = host_network_variant(yaml.safe_load((ROOT / "docker-compose.yml").read_text()), image)
    (tmp_path / "docker-compose.yml").write_text(yaml.safe_dump(variant, sort_keys=False))
    stack = Compose(tool, tmp_path / "docker-compose.yml")
    try:
        yield stack
    finally:
        if stack.containers():
            (ARTIFACTS / "compose.log").write_text(stack.run("logs", "--no-color").stdout)
            stack.run("down", "--remove-orphans")


@pytest.fixture(scope="module")
def chromium() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        unavailable("no Chromium on this machine (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield browser
        browser.close()


def wait_until_ready(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"{url} never answered 200"
        time.sleep(0.5)


def sign_in_as_alice(chromium) -> None:  # type: ignore[no-untyped-def]
    context = chromium.new_context(viewport={"width": 900, "height": 640})
    try:
        page = context.new_page()
        page.set_default_timeout(20000)
        page.goto("http://localhost:8000/")
        page.wait_for_url(re.compile(r"^http://localhost:9000/login\?.*"))
        page.fill("#signInFormUsername", "alice")
        page.fill("#signInFormPassword", "alice-password")
        page.click("#signInSubmitButton")
        page.wait_for_url("http://localhost:8000/")
        assert page.inner_text("#user") == "alice"
        assert "alice@example.com" in page.inner_text("#identity")
        page.screenshot(path=str(ARTIFACTS / "compose-signed-in.png"))
    finally:
        context.close()


def test_compose_up_then_alice_signs_in_and_down_leaves_nothing(compose: Compose, chromium) -> None:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    compose.run("up", "--detach")
    wait_until_ready("http://127.0.0.1:8000/oauth2/readyz", timeout=120)
    compose.assert_own_services_answer()
    sign_in_as_alice(chromium)
    record("compose_up_to_signed_in_s", round(time.monotonic() - started, 1))
    compose.assert_own_services_answer()
    assert '"GET /cognito_redirect' in compose.logs("gateway"), "this gateway (its access log) served the sign-in"

    while set(compose.health().values()) != {"healthy"}:
        assert "unhealthy" not in compose.health().values(), compose.health()
        assert time.monotonic() - started < 180, compose.health()
        time.sleep(1)
    assert set(compose.health()) == {"gateway", "dev_idp", "upstream_demo"}
    record("compose_up_to_all_healthy_s (health check intervals 15 s)", round(time.monotonic() - started, 1))

    compose.run("down", "--remove-orphans")
    assert compose.containers() == [], "no container of the project is left, running or stopped"
    assert not [port for port in PORTS if _port_taken(port)], "nothing listens on the services' ports any more"
    networks = docker("network", "ls", "--quiet", "--filter", f"label=com.docker.compose.project={PROJECT}")
    assert networks.stdout.split() == []
    assert os.path.exists(ARTIFACTS / "compose-signed-in.png")
