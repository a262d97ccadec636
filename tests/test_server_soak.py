"""Memory and many connections, on two real workers: a steady moderate load with every worker's resident memory
sampled (flat within ±5 % after the warm-up), and 1,000 concurrent keep-alive connections held without an error.

``make test`` runs the short variant (20 s of load); ``make soak`` runs 10 minutes (``SOAK_SECONDS=600``).
``SOAK_CONNECTIONS`` sets the number of held connections. The figures are printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import asyncio
import os
import resource
import statistics
import time
from collections.abc import Iterator

import aiohttp
import pytest
from yarl import URL

from .stack import Stack
from .test_server_limits import rss_kib
from .test_server_workers import worker_pids

SECONDS = float(os.environ.get("SOAK_SECONDS", "20"))
CONNECTIONS = int(os.environ.get("SOAK_CONNECTIONS", "1000"))
RATE = 100  # requests per second, over a few keep-alive connections: moderate for two workers on a shared machine
CLIENTS = 4


@pytest.fixture(scope="module")
def soak(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = CONNECTIONS * 2 + 256  # this process holds one end, each worker the other (and its upstream side)
    if soft < wanted:  # the gateway inherits it
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    env = {"GATEWAY_WORKERS": "2", "GATEWAY_PUBLIC_PATHS": "/api/whoami"}
    running = Stack.start(tmp_path_factory.mktemp("soak"), gateway_env=env)
    yield running
    running.stop()


async def _steady(url: str, until: float, errors: list[str]) -> int:
    """RATE / CLIENTS requests a second on one keep-alive connection, paced to a schedule (no bursts)."""
    interval, sent = CLIENTS / RATE, 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as client:
        next_at = time.monotonic()
        while next_at < until:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at += interval
            sent += 1
            try:
                async with client.get(url) as response:
                    await response.read()
                    if response.status != 200:
                        errors.append(f"status {response.status}")
            except (aiohttp.ClientError, TimeoutError) as exc:
                errors.append(repr(exc))
    return sent


async def _sample(pids: dict[int, int], until: float, every: float) -> dict[int, list[tuple[float, int]]]:
    started, series = time.monotonic(), {number: [] for number in pids}
    while time.monotonic() < until:
        for number, pid in pids.items():
            series[number].append((time.monotonic() - started, rss_kib(pid)))
        await asyncio.sleep(every)
    return series


async def test_a_steady_load_keeps_every_workers_memory_flat(soak: Stack) -> None:
    pids = worker_pids(soak.gateway)
    assert len(pids) == 2
    until = time.monotonic() + SECONDS
    errors: list[str] = []
    loads = [asyncio.create_task(_steady(f"{soak.url}/api/whoami", until, errors)) for _ in range(CLIENTS)]
    series = await _sample(pids, until, every=max(SECONDS / 40, 0.5))
    sent = sum(await asyncio.gather(*loads))
    warm_up = max(5.0, SECONDS / 4)
    print(f"\nsoak: {SECONDS:.0f}s at {RATE} req/s: {sent} requests, {len(errors)} errors; RSS per worker (MiB):")
    for number, samples in series.items():
        shown = samples[:: max(1, len(samples) // 10)]
        print(f"  worker {number}: " + ", ".join(f"{t:.0f}s {kib / 1024:.1f}" for t, kib in shown))
    assert not errors, errors[:10]
    assert sent >= RATE * SECONDS * 0.8, "the load was not steady"
    for number, samples in series.items():
        settled = [kib for t, kib in samples if t >= warm_up]
        middle = statistics.median(settled)
        spread = (min(settled) / middle - 1, max(settled) / middle - 1)
        print(f"  worker {number} after {warm_up:.0f}s warm-up: {spread[0]:+.1%} / {spread[1]:+.1%} around the median")
        assert spread[0] >= -0.05 and spread[1] <= 0.05, (number, settled)


async def _request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> int:
    writer.write(f"GET /oauth2/healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    await reader.readexactly(length)
    assert b"connection: close" not in head.lower()
    return int(head.split(b" ", 2)[1])


async def test_1000_keep_alive_connections_are_held_without_errors(soak: Stack) -> None:
    url = URL(soak.url)
    assert url.host is not None and url.port is not None
    connections = []
    try:
        for _ in range(0, CONNECTIONS, 100):  # in batches, as browsers arrive: not one SYN flood
            batch = [
                asyncio.open_connection(url.host, url.port) for _ in range(min(100, CONNECTIONS - len(connections)))
            ]
            connections.extend(await asyncio.gather(*batch))
        host = f"{url.host}:{url.port}"
        first = await asyncio.gather(*(_request(r, w, host) for r, w in connections), return_exceptions=True)
        await asyncio.sleep(3)  # held open, idle
        second = await asyncio.gather(*(_request(r, w, host) for r, w in connections), return_exceptions=True)
    finally:
        for _, writer in connections:
            writer.close()
    failures = [result for result in (*first, *second) if result != 200]
    print(f"\n{len(connections)} keep-alive connections: two requests each, {len(failures)} failures")
    assert len(connections) == CONNECTIONS and not failures, failures[:10]
