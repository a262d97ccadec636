"""``python -m dev_idp`` as a user runs it: the banner, the environment block, bad settings, the admin command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .support import ROOT, CapturedProcess, start_dev_idp, write_json


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "dev_idp", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_banner_says_not_for_production_and_prints_the_gateway_environment(tmp_path: Path) -> None:
    idp = start_dev_idp("--keys", str(tmp_path / "keys.json"))
    try:
        out = idp.process.output()
        assert "DEVELOPMENT identity provider" in out and "Never use it in production" in out
        assert out.index("Never use it in production") < out.index("GATEWAY_PROVIDER=")
        port = int(idp.url.rsplit(":", 1)[1])
        assert port != 0 and port != 9000, "--port 0 picked a free port and the banner says which"
        assert idp.env == {
            "GATEWAY_PROVIDER": "cognito",
            "COGNITO_ISSUER": f"http://localhost:{port}/local_devpool1",
            "COGNITO_DOMAIN": f"http://localhost:{port}",
            "COGNITO_CLIENT_ID": "gateway",
            "COGNITO_CLIENT_SECRET": "gateway-dev-secret-for-local-use-only",
        }
        kids = _kids(idp.url)
    finally:
        idp.process.stop()
    again = start_dev_idp("--keys", str(tmp_path / "keys.json"))
    try:
        assert _kids(again.url) == kids, "keys persist in the --keys file across restarts"
    finally:
        again.process.stop()
    assert (tmp_path / "keys.json").stat().st_mode & 0o077 == 0, "the private keys file is owner-only"


def _kids(url: str) -> list[str]:
    import urllib.request

    with urllib.request.urlopen(f"{url}/local_devpool1/.well-known/jwks.json", timeout=10) as response:
        return [key["kid"] for key in json.load(response)["keys"]]


def test_public_client_banner_has_no_secret(tmp_path: Path) -> None:
    users = write_json(
        tmp_path / "users.json",
        {"pool_id": "local_pub1", "clients": [{"client_id": "spa", "callback_urls": ["http://localhost:3000/cb"]}]},
    )
    idp = start_dev_idp("--users", str(users))
    try:
        assert idp.env["COGNITO_CLIENT_ID"] == "spa" and "COGNITO_CLIENT_SECRET" not in idp.env
        assert idp.env["COGNITO_ISSUER"].endswith("/local_pub1")
    finally:
        idp.process.stop()


def test_bad_settings_exit_2_naming_every_problem() -> None:
    result = run(env={"DEV_IDP_PORT": "seventy", "DEV_IDP_AUTO_CONFIRM": "maybe", "DEV_IDP_PUBLIC_URL": "ftp://x"})
    assert result.returncode == 2
    for name in ("DEV_IDP_PORT", "DEV_IDP_AUTO_CONFIRM", "DEV_IDP_PUBLIC_URL"):
        assert name in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_users_file_exits_2_naming_every_problem(tmp_path: Path) -> None:
    bad = write_json(tmp_path / "users.json", {"clients": [{"client_id": "x"}], "users": [{"username": "u"}, 7]})
    result = run("--users", str(bad))
    assert result.returncode == 2
    assert "callback_urls" in result.stderr and "users[0]" in result.stderr and "users[1]" in result.stderr
    (tmp_path / "broken.json").write_text("{not json")
    assert run("--users", str(tmp_path / "broken.json")).returncode == 2
    assert run("--users", str(tmp_path / "missing.json")).returncode == 2


def test_admin_command_disables_and_enables_a_user() -> None:
    idp = start_dev_idp()
    try:
        base = ["admin", "--url", idp.url, "--token", idp.admin_token]
        disabled = run(*base[:1], "disable", "bob", *base[1:])
        assert disabled.returncode == 0, disabled.stdout + disabled.stderr
        assert json.loads(disabled.stdout)["enabled"] is False
        shown = run("admin", "show", "bob", "--url", idp.url, "--token", idp.admin_token)
        assert json.loads(shown.stdout)["enabled"] is False
        assert json.loads(run("admin", "enable", "bob", *base[1:]).stdout)["enabled"] is True
        refused = run("admin", "disable", "bob", "--url", idp.url, "--token", "wrong")
        assert refused.returncode == 1 and "401" in refused.stdout
    finally:
        idp.process.stop()


def test_sigterm_stops_it_cleanly() -> None:
    process = CapturedProcess(["-m", "dev_idp", "--port", "0"])
    process.wait_for("^# ready$")
    process.stop()
    assert process.proc.returncode == 0
