"""JupyterLab, a WebSocket application nobody here wrote, used through the gateway in a real browser.

The test starts dev_idp, JupyterLab (its own token and password off: the gateway is the only way in, bound to
loopback) and the gateway; headless Chromium signs in through the gateway, opens a notebook, and runs a cell. The
cell's code goes to the kernel, and its output comes back, over the kernel's WebSocket channel
(``/api/kernels/<id>/channels``), which passes through the gateway like any other request.

Without Chromium the test is skipped with a reason (``make test`` prints it); with ``CI=true`` that fails instead,
as in tests/test_browser.py.
"""

from __future__ import annotations

import importlib.util
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .stack import SESSION_SECRET, Stack, directory_for, start_gateway
from .support import CapturedProcess, free_port, start_dev_idp, write_json
from .test_browser import ARTIFACTS, chromium, page, sign_in  # noqa: F401  (fixtures)

NOTEBOOK = {
    "cells": [
        {
            "cell_type": "code",
            "execution_count": None,
            "id": "c1",
            "metadata": {},
            "outputs": [],
            "source": ["print(6 * 7)"],
        }
    ],
    "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
    "nbformat": 4,
    "nbformat_minor": 5,
}


def start_jupyterlab(tmp: Path) -> tuple[CapturedProcess, str]:
    if importlib.util.find_spec("jupyterlab") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true and no jupyterlab: `make` installs it with the test extras (pyproject.toml)")
        pytest.skip("jupyterlab is not installed (pip install -c constraints.txt -e '.[test]'): not run")
    root, home = tmp / "notebooks", tmp / "home"
    root.mkdir()
    write_json(root / "roundtrip.ipynb", NOTEBOOK)
    port = free_port()
    env = {
        "HOME": str(home),
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "IPYTHONDIR": str(home / "ipython"),
    }
    args = [
        "-m",
        "jupyterlab",
        "--no-browser",
        "--allow-root",  # CI runs as root
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        # Nothing but the gateway reaches it, and the gateway decides who may: JupyterLab's own token is off.
        "--IdentityProvider.token=",
        "--ServerApp.password=",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.terminals_enabled=False",
        # No traffic beyond loopback: no update check, no news feed, no extension manager on PyPI.
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.news_url=None",
        "--LabApp.extension_manager=readonly",
    ]
    process = CapturedProcess(args, env, cwd=tmp)
    process.wait_for(rf"http://127\.0\.0\.1:{port}/lab", timeout=60)
    return process, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def lab_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("jupyterlab")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    idp = start_dev_idp("--users", str(write_json(tmp / "users.json", directory_for(url))))
    lab, lab_url = start_jupyterlab(tmp)
    env = {
        **idp.env,
        "GATEWAY_UPSTREAM": lab_url,
        "GATEWAY_PUBLIC_URL": url,
        "GATEWAY_LISTEN": f"127.0.0.1:{port}",
        "GATEWAY_SESSION_SECRET": SESSION_SECRET,
    }
    running = Stack(idp, lab, lab_url, start_gateway(env), url, env)
    yield running
    running.stop()


def test_a_notebook_cell_runs_on_its_kernel_through_the_gateway(page, lab_stack: Stack) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    started = time.monotonic()
    sockets: list[str] = []
    received: list[str] = []

    def watch(ws) -> None:  # type: ignore[no-untyped-def]
        sockets.append(ws.url)
        if "/channels" in ws.url:
            # Jupyter's v1 kernel protocol sends binary frames: JSON parts behind a table of offsets.
            ws.on(
                "framereceived", lambda data: received.append(data if isinstance(data, str) else data.decode("latin-1"))
            )

    page.on("websocket", watch)
    sign_in(page, lab_stack, "/lab/tree/roundtrip.ipynb")
    page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=60000)
    page.click(".jp-Notebook .jp-Cell .jp-InputArea-prompt")
    page.click("jp-button[data-command='notebook:run-cell-and-select-next']")
    output = page.wait_for_selector(".jp-OutputArea-output", timeout=30000)
    assert output.inner_text().strip() == "42"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "jupyterlab-through-the-gateway.png"))

    gateway_ws = lab_stack.url.replace("http://", "ws://", 1)
    channels = [url for url in sockets if re.match(rf"{re.escape(gateway_ws)}/api/kernels/[0-9a-f-]+/channels", url)]
    assert channels, f"the kernel's WebSocket did not go through the gateway: {sockets}"
    assert any('"text": "42\\n"' in frame or '"text":"42\\n"' in frame for frame in received), "the output came over it"
    # JupyterLab saw the connection arrive (the gateway's access line comes only when the socket closes).
    assert lab_stack.upstream.wait_for(r"Connecting to kernel [0-9a-f-]+")
    log = lab_stack.gateway.output()
    assert "Traceback" not in log and "ERROR" not in log, log[-3000:]
    print(f"JupyterLab kernel round trip through the gateway in Chromium: {time.monotonic() - started:.1f} s")
