"""docker-compose.yml without a Docker engine: checked statically, then its services run with exactly the commands
and environment compose gives them (service hostnames mapped to loopback), and a sign-in goes through them."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
import yaml
from yarl import URL

from gateway.access import Policy
from gateway.config import ConfigError, Settings

from .stack import HTML, fill_form
from .support import ROOT, CapturedProcess, new_browser

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict = COMPOSE["services"]
_VARIABLE = re.compile(r"\$\{(\w+)(?:(:?-)([^}]*))?\}")


def interpolate(value: str, environ: Mapping[str, str]) -> str:
    """Compose's ${VAR:-default} (unset or empty: the default) and ${VAR-default} (unset only), as `docker compose
    up` reads them from the environment and .env."""

    def one(match: re.Match[str]) -> str:
        name, operator, default = match.groups()
        if name in environ and (environ[name] or operator == "-"):
            return environ[name]
        return default or ""

    return _VARIABLE.sub(one, value)


def image_command() -> list[str]:
    cmd = [line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("CMD ")][-1]
    return json.loads(cmd[4:])


def on_loopback(value: str) -> str:
    """Service hostnames (and 0.0.0.0) as they resolve when every service runs on this machine."""
    for name in SERVICES:
        value = re.sub(rf"(?<=//){name}(?=[:/])", "127.0.0.1", value)
    return value.replace("0.0.0.0", "127.0.0.1")


def compose_environment(name: str, dotenv: Mapping[str, str]) -> dict[str, str]:
    """The environment compose gives service ``name`` with ``dotenv`` as its .env file."""
    return {key: interpolate(str(value), dotenv) for key, value in (SERVICES[name].get("environment") or {}).items()}


def service_process(name: str) -> tuple[list[str], dict[str, str]]:
    service = SERVICES[name]
    command = service.get("command") or image_command()
    assert command[:2] == ["python", "-m"], command
    environment = {key: on_loopback(value) for key, value in compose_environment(name, {}).items()}
    return [on_loopback(arg) for arg in command[1:]], environment


def test_compose_file_shape() -> None:
    assert set(SERVICES) == {"gateway", "dev_idp", "upstream_demo"}
    assert SERVICES["gateway"]["ports"][0] == "8000:8000"
    assert "ports" not in SERVICES["upstream_demo"], "upstream_demo trusts identity headers: never publish it"
    assert SERVICES["dev_idp"]["network_mode"] == "service:gateway"
    assert image_command() == ["python", "-m", "gateway"]


def test_docker_compose_config_validates_the_file() -> None:
    tool = shutil.which("docker-compose")
    if tool is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true and no docker-compose: .ci/run must `apt-get install docker-compose`")
        pytest.skip("docker-compose is not installed (apt-get install docker-compose): static check not run")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COGNITO_", "GATEWAY_"))}
    result = subprocess.run(
        [tool, "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)["services"]
    assert resolved["gateway"]["environment"]["GATEWAY_UPSTREAM"] == "http://upstream_demo:5000"


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture(scope="module")
def compose_services() -> Iterator[dict[str, CapturedProcess]]:
    busy = [port for port in (8000, 9000, 5000) if not _port_free(port)]
    if busy:
        if os.environ.get("CI") == "true":
            pytest.fail(f"ports {busy} are taken; the compose services need 8000, 9000 and 5000")
        pytest.skip(f"ports {busy} are in use (is `make demo` running?): compose services not started")
    started: dict[str, CapturedProcess] = {}
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("COGNITO_", "GATEWAY_", "DEV_IDP_"))}
    try:
        for name, ready in (("upstream_demo", "listening on"), ("dev_idp", "^# ready"), ("gateway", "listening on")):
            args, environment = service_process(name)
            process = CapturedProcess(args, env={**clean, **environment}, inherit_env=False)
            started[name] = process
            process.wait_for(ready)
        yield started
    finally:
        for process in reversed(started.values()):
            process.stop()


def test_compose_environment_has_no_dangling_variables() -> None:
    for name in SERVICES:
        _, environment = service_process(name)
        for key, value in environment.items():
            assert "${" not in value, (name, key)


def test_a_real_pool_set_in_dotenv_as_the_readme_says_reaches_the_gateway() -> None:
    """README, "Switching from dev_idp to a real Cognito pool": the pool id, an empty COGNITO_ISSUER and the
    other settings in .env; the gateway must then use the pool's issuer, not dev_idp's."""
    dotenv = {
        "COGNITO_USER_POOL_ID": "eu-west-1_AbC123xyz",
        "COGNITO_ISSUER": "",
        "COGNITO_DOMAIN": "https://my-prefix.auth.eu-west-1.amazoncognito.com",
        "COGNITO_CLIENT_ID": "4hpg5n34kduiedr7taqipdo77h",
        "COGNITO_CLIENT_SECRET": "client-secret-value-123",
        "GATEWAY_SESSION_SECRET": "dnZ/js812RQDSb1Qdi0JioX6KnZx3KBKhqAh67NUdZQ=",
        "GATEWAY_RULES": "/admin/=group:admins",
    }
    settings = Settings.from_env(compose_environment("gateway", dotenv))
    assert settings.provider.issuer == "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC123xyz"
    assert settings.access.rules.policy_for("/admin/x") == Policy("group", groups=frozenset({"admins"}))
    demo = Settings.from_env(compose_environment("gateway", {}))
    assert demo.provider.issuer == "http://localhost:9000/local_devpool1", "without a .env: dev_idp"
    with pytest.raises(ConfigError, match="GATEWAY_SESSION_SECRET: the demo secret"):
        Settings.from_env(compose_environment("gateway", {**dotenv, "GATEWAY_SESSION_SECRET": ""}))


def test_env_example_read_by_docker_compose_itself_gives_clean_values(tmp_path: Path) -> None:
    """`cp .env.example .env`, with and without its real-pool lines uncommented: docker compose's own reading
    (everything after "=" is the value, a "#" included) must give values the gateway takes."""
    example = (ROOT / ".env.example").read_text()
    real_pool = re.sub(r"(?m)^# ((?:COGNITO|GATEWAY)_[A-Z_]+=)", r"\1", example)
    for text in (example, real_pool):
        (tmp_path / ".env").write_text(text)
        shutil.copy(ROOT / "docker-compose.yml", tmp_path / "docker-compose.yml")
        rendered = subprocess.run(
            ["docker-compose", "config"], cwd=tmp_path, capture_output=True, text=True, check=True
        ).stdout
        environment = yaml.safe_load(rendered)["services"]["gateway"]["environment"]
        assert not any("#" in str(value) for value in environment.values()), environment
    assert environment["COGNITO_ISSUER"] == "" and environment["COGNITO_USER_POOL_ID"] == "eu-west-1_AbC123xyz"


async def test_sign_in_through_the_compose_services(compose_services: dict[str, CapturedProcess]) -> None:
    async with new_browser() as browser:
        async with browser.get("http://localhost:8000/", headers=HTML) as page:
            assert URL(str(page.url)).origin() == URL("http://localhost:9000"), "the browser uses localhost:9000"
            landed = await fill_form(browser, page, {"username": "alice", "password": "alice-password"})
        assert str(landed.url) == "http://localhost:8000/"
        page_text = await landed.text()
        assert "Hello, <b id=user>alice</b>" in page_text
        assert "x-amzn-oidc-data: <b>signature verified</b>" in page_text, "upstream_demo checked the gateway's keys"
