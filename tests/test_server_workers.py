"""Workers, the supervisor and the drain, on real processes: ``GATEWAY_WORKERS=2`` serving one port, a worker
killed and restarted, and a rolling restart under load (a second instance takes the port through SO_REUSEPORT,
the first gets SIGTERM) that must not fail a single request, nor a download in flight.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import re
import signal
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from .stack import Stack, start_gateway
from .support import CapturedProcess, free_port, start_dev_idp

PUBLIC = {"GATEWAY_PUBLIC_PATHS": "/api/whoami,/api/download"}


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {**PUBLIC, "GATEWAY_WORKERS": "2"}
    running = Stack.start(tmp_path_factory.mktemp("workers"), gateway_env=env)
    yield running
    running.stop()


def worker_pids(process: CapturedProcess) -> dict[int, int]:
    """Worker number → its current pid, from the supervisor's lines."""
    pids: dict[int, int] = {}
    for match in re.finditer(r"worker (\d+) started \(pid (\d+)\)", process.output()):
        pids[int(match.group(1))] = int(match.group(2))
    return pids


async def fetch_many(url: str, count: int) -> list[int]:
    """``count`` requests, each on a new connection (so the kernel spreads them over the workers)."""
    statuses = []
    for _ in range(count):
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as client:
            async with client.get(url) as response:
                await response.read()
                statuses.append(response.status)
    return statuses


async def test_two_workers_share_the_port_and_every_line_names_its_process(two_workers: Stack) -> None:
    statuses = await fetch_many(f"{two_workers.url}/api/whoami", 40)
    assert statuses == [200] * 40
    await asyncio.sleep(0.3)
    output = two_workers.gateway.output()
    assert "[supervisor] gateway.workers: worker 1 started" in output
    for number in (1, 2):
        served = re.findall(rf"\[worker {number}\] aiohttp\.access: .*GET /api/whoami", output)
        assert served, f"worker {number} served nothing:\n{output[-3000:]}"
    assert all(re.search(r"\[(supervisor|worker \d)\]", line) for line in output.splitlines() if " INFO " in line)


async def test_a_worker_that_dies_is_restarted(two_workers: Stack) -> None:
    before = worker_pids(two_workers.gateway)
    os.kill(before[1], signal.SIGKILL)
    two_workers.gateway.wait_for(r"worker 1 \(pid \d+\) died \(signal SIGKILL\); restarting")
    deadline = time.monotonic() + 15
    while worker_pids(two_workers.gateway)[1] == before[1]:
        assert time.monotonic() < deadline, two_workers.gateway.output()[-2000:]
        await asyncio.sleep(0.1)
    await asyncio.sleep(1)  # the new worker builds its app
    assert await fetch_many(f"{two_workers.url}/api/whoami", 20) == [200] * 20
    assert worker_pids(two_workers.gateway)[2] == before[2], "the other worker was left alone"


def test_the_supervisor_reports_a_port_it_cannot_bind_and_exits_1(two_workers: Stack) -> None:
    env = {**two_workers.env, "GATEWAY_LISTEN": "192.0.2.1:8000"}  # TEST-NET: not an address of this host
    process = CapturedProcess(["-m", "gateway"], env)
    try:
        assert process.proc.wait(20) == 1
        assert "cannot listen on GATEWAY_LISTEN=192.0.2.1:8000" in process.output()
    finally:
        process.stop()


def test_workers_whose_supervisor_was_killed_drain_and_exit(two_workers: Stack) -> None:
    env = {**two_workers.env, "GATEWAY_LISTEN": f"127.0.0.1:{free_port()}"}
    process = start_gateway(env)
    try:
        pids = worker_pids(process)
        assert len(pids) == 2
        process.proc.kill()
        process.proc.wait(5)
        deadline = time.monotonic() + 15
        while any(Path(f"/proc/{pid}").exists() and _alive(pid) for pid in pids.values()):
            assert time.monotonic() < deadline, "workers outlived their supervisor"
            time.sleep(0.2)
    finally:
        process.stop()


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for a parent that is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


# The rolling restart ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Load:
    sent: int = 0
    failed: int = 0
    refused: int = 0  # connection refused before anything was sent: what a load balancer retries
    errors: list[str] = dataclasses.field(default_factory=list)


async def _client_loop(url: str, load: Load, stop: asyncio.Event) -> None:
    """Requests back to back on a keep-alive connection, reconnecting when the gateway says it closes."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as client:
        while not stop.is_set():
            load.sent += 1
            try:
                async with client.get(url) as response:
                    await response.read()
                    if response.status != 200:
                        load.failed += 1
                        load.errors.append(f"status {response.status}")
            except aiohttp.ClientConnectorError:
                load.refused += 1
                load.sent -= 1  # retried: a load balancer would pick another backend
            except (aiohttp.ClientError, TimeoutError) as exc:
                load.failed += 1
                load.errors.append(repr(exc))


async def _slow_download(url: str, size: int) -> tuple[int, str]:
    """Read ``size`` bytes at about 40 MiB/s, so the download is still running when SIGTERM comes."""
    digest, received = hashlib.sha256(), 0
    async with aiohttp.ClientSession() as client:
        async with client.get(f"{url}/api/download?size={size}") as response:
            assert response.status == 200
            async for chunk in response.content.iter_chunked(1024 * 1024):
                digest.update(chunk)
                received += len(chunk)
                await asyncio.sleep(0.025)
    return received, digest.hexdigest()


def _pattern_sha(size: int) -> str:
    block = bytes(range(256)) * 256
    digest = hashlib.sha256()
    for _ in range(size // len(block)):
        digest.update(block)
    return digest.hexdigest()


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_a_rolling_restart_under_load_fails_no_request(tmp_path: Path, workers: str) -> None:
    env = {**PUBLIC, "GATEWAY_WORKERS": workers, "GATEWAY_SHUTDOWN_TIMEOUT": "20s"}
    stack = Stack.start(tmp_path, gateway_env=env)
    successor: CapturedProcess | None = None
    try:
        load, stop = Load(), asyncio.Event()
        clients = [asyncio.create_task(_client_loop(f"{stack.url}/api/whoami", load, stop)) for _ in range(6)]
        size = 160 * 1024 * 1024
        download = asyncio.create_task(_slow_download(stack.url, size))
        await asyncio.sleep(1.5)
        successor = await asyncio.to_thread(start_gateway, stack.env)  # takes the port beside the first
        await asyncio.sleep(0.5)
        sent_before = load.sent
        stack.gateway.proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(stack.gateway.proc.wait, 30)
        await asyncio.sleep(1)
        stop.set()
        await asyncio.gather(*clients)
        received, sha = await download
        print(
            f"\nrolling restart ({workers} worker(s)): {load.sent} requests sent ({load.sent - sent_before} after "
            f"SIGTERM), {load.failed} failed, {load.refused} refused connections retried; download {received} bytes"
        )
        assert code == 0, stack.gateway.output()[-3000:]
        assert load.failed == 0, load.errors[:10]
        assert load.sent - sent_before > 50, "the load went on during the drain"
        assert (received, sha) == (size, _pattern_sha(size))
        assert "drained" in stack.gateway.output()
        assert successor.proc.poll() is None
        assert re.search(r"GET /api/whoami", successor.output()), "the second instance took over"
    finally:
        stack.stop()
        if successor is not None:
            successor.stop()


def test_two_workers_serve_https_with_the_guard_and_both_open_the_redirect_listener(tmp_path: Path) -> None:
    from .test_tls import LocalCa, https_env, wait_for_https

    ca = LocalCa.create(tmp_path)
    idp = start_dev_idp()
    env, port, _ = https_env(idp, ca, tmp_path, GATEWAY_WORKERS="2")
    redirect_port = int(env["GATEWAY_HTTP_REDIRECT_LISTEN"].rsplit(":", 1)[1])
    process = start_gateway(env, wait_ready=False)
    context = ssl.create_default_context(cafile=str(ca.file))
    try:
        wait_for_https(port, context, process)
        process.wait_for(r"\[worker 2\].*listening on")
        for _ in range(30):  # new connections: the kernel spreads them over both workers
            with urllib.request.urlopen(f"https://127.0.0.1:{port}/oauth2/healthz", timeout=5, context=context) as r:
                assert r.status == 200
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
                conn.sendall(b"GET /?" + b"q" * 9000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                assert conn.recv(100).startswith(b"HTTP/1.1 414"), "the guard sits under TLS too"
        request = urllib.request.Request(f"http://127.0.0.1:{redirect_port}/x", method="GET")
        opener = urllib.request.build_opener(_NoRedirects())
        with pytest.raises(urllib.error.HTTPError) as caught:
            opener.open(request, timeout=5)
        caught.value.close()
        assert caught.value.code == 308
        time.sleep(0.3)
        output = process.output()
        for number in (1, 2):
            assert re.search(rf"\[worker {number}\] aiohttp\.access: .*GET /oauth2/healthz", output), output[-2000:]
    finally:
        process.stop()
        idp.process.stop()


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None
