"""Streamed responses through the gateway: SSE latency, the idle bound, and what a cut stream leaves in the log.

The gateway runs with GATEWAY_UPSTREAM_TIMEOUT=1s: any stream that survives a longer pause shows it lives under
GATEWAY_STREAM_IDLE_TIMEOUT instead. Every cut must be one WARNING line naming the request and nothing else: no
traceback, no ``ERROR aiohttp.server``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import statistics
import time
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from .stack import Stack, browse_and_sign_in
from .stream_stack import UNHANDLED, gateway_beside, line, lines_with, settle, start_stream_stack, tag
from .support import CapturedProcess, new_browser


@pytest.fixture(scope="module")
def sse_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stream_stack(tmp_path_factory.mktemp("sse"), {"GATEWAY_UPSTREAM_TIMEOUT": "1s"})
    yield running
    running.stop()


@pytest.fixture
async def alice(sse_stack: Stack) -> AsyncIterator[aiohttp.ClientSession]:
    async with new_browser() as browser:
        await browse_and_sign_in(browser, f"{sse_stack.url}/")
        yield browser


def assert_handled(gateway: CapturedProcess) -> None:
    unhandled = [text for text in gateway.output().splitlines() if UNHANDLED.search(text)]
    assert not unhandled, "\n".join(unhandled)


async def event_latencies(client: aiohttp.ClientSession, url: str) -> list[float]:
    """Read an SSE stream as it comes (``iter_any``) and return, per event, its write→read time in seconds."""
    latencies, pending = [], b""
    async with client.get(url, headers={"Accept": "text/event-stream"}) as response:
        assert response.status == 200 and response.content_type == "text/event-stream"
        async for chunk in response.content.iter_any():
            arrived = time.monotonic()
            pending += chunk
            while b"\n\n" in pending:
                event, pending = pending.split(b"\n\n", 1)
                data = json.loads(event.rpartition(b"data: ")[2])
                if "sent" in data:
                    latencies.append(arrived - data["sent"])
    return latencies


def p99(values: list[float]) -> float:
    return sorted(values)[max(0, round(0.99 * len(values)) - 1)]


async def test_sse_events_reach_the_client_as_the_upstream_writes_them(
    sse_stack: Stack, alice: aiohttp.ClientSession
) -> None:
    query = "?kind=sse&count=25&interval=0.2"
    through = await event_latencies(alice, f"{sse_stack.url}/stream/{tag()}{query}")
    async with aiohttp.ClientSession() as direct:
        baseline = await event_latencies(direct, f"{sse_stack.upstream_url}/stream/{tag()}{query}")
    assert len(through) == len(baseline) == 25
    ms = {
        name: (statistics.median(v) * 1000, p99(v) * 1000) for name, v in (("gateway", through), ("direct", baseline))
    }
    print(
        f"SSE write→read over loopback, 25 events 200 ms apart: through the gateway median {ms['gateway'][0]:.2f} ms,"
        f" p99 {ms['gateway'][1]:.2f} ms; straight to the upstream median {ms['direct'][0]:.2f} ms,"
        f" p99 {ms['direct'][1]:.2f} ms"
    )
    assert statistics.median(through) < 0.05, "each event is written on as it arrives, not when a chunk fills"
    assert max(through) < 0.2, "every event arrived before the upstream wrote the next"


@pytest.mark.parametrize("sse", ["1", "0"], ids=["event-stream", "chunked-of-unknown-length"])
async def test_a_quiet_stream_outlives_the_upstream_timeout(
    sse_stack: Stack, alice: aiohttp.ClientSession, sse: str
) -> None:
    name = tag()
    async with alice.get(f"{sse_stack.url}/stream/{name}?kind=pause&seconds=2.5&sse={sse}") as response:
        assert "Content-Length" not in response.headers
        assert await response.read() == b"ab"
    await settle()
    assert not [text for text in lines_with(sse_stack.gateway, f"/stream/{name}") if "WARNING" in text]


async def test_a_small_body_of_known_length_that_stalls_is_an_honest_504_and_one_warning(
    sse_stack: Stack, alice: aiohttp.ClientSession
) -> None:
    """A small sized body is read whole before its head goes out (one write), so a stall within
    GATEWAY_UPSTREAM_TIMEOUT is answered 504 before anything was sent, never half a body."""
    name = tag()
    started = time.monotonic()
    async with alice.get(f"{sse_stack.url}/stream/{name}?kind=pause&seconds=3&length=1") as response:
        assert response.status == 504
        assert (await response.json())["error"] == "upstream_timeout"
    assert time.monotonic() - started < 2.5
    warning = f"WARNING [main] gateway.proxy: upstream timed out: GET /stream/{name}"
    await line(sse_stack.gateway, re.escape(warning) + "$")
    await settle()
    assert len([text for text in lines_with(sse_stack.gateway, f"/stream/{name}") if "WARNING" in text]) == 1


async def test_an_idle_stream_is_cut_at_the_idle_bound_with_one_warning(
    sse_stack: Stack, alice: aiohttp.ClientSession
) -> None:
    gateway, url = gateway_beside(sse_stack, GATEWAY_STREAM_IDLE_TIMEOUT="1.5s")
    try:
        name = tag()
        async with alice.get(f"{url}/stream/{name}?kind=hang") as response:
            started = time.monotonic()
            first = await response.content.readuntil(b"\n\n")
            assert b'"seq": 0' in first
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()
            assert 1.2 < time.monotonic() - started < 4
        cut = "stream cut: the upstream sent nothing for 1.5s (GATEWAY_STREAM_IDLE_TIMEOUT)"
        await line(gateway, rf"WARNING \[main\] gateway.streaming: {re.escape(cut)}: GET /stream/{name}$")
        await line(sse_stack.upstream, f"stream /stream/{name} ended: the gateway closed the connection")
        await settle()
        assert len([text for text in lines_with(gateway, f"/stream/{name}") if "WARNING" in text]) == 1
        assert_handled(gateway)
    finally:
        gateway.stop()


async def test_the_upstream_breaking_off_is_one_warning(sse_stack: Stack, alice: aiohttp.ClientSession) -> None:
    name = tag()
    async with alice.get(f"{sse_stack.url}/stream/{name}?kind=die") as response:
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    await line(
        sse_stack.gateway, rf"WARNING .*stream cut: the upstream broke off the response \(\w+\): GET /stream/{name}$"
    )
    await settle()
    assert len([text for text in lines_with(sse_stack.gateway, f"/stream/{name}") if "WARNING" in text]) == 1
    assert_handled(sse_stack.gateway)


async def test_the_client_leaving_is_one_warning_and_ends_the_upstreams_stream(
    sse_stack: Stack, alice: aiohttp.ClientSession
) -> None:
    name = tag()
    async with alice.get(f"{sse_stack.url}/stream/{name}?kind=sse&count=1000&interval=0.05") as response:
        await response.content.readuntil(b"\n\n")
        await response.content.readuntil(b"\n\n")
        response.close()  # the tab is closed
    await line(
        sse_stack.gateway, rf"WARNING \[main\] gateway.streaming: stream cut: the client went away: GET /stream/{name}$"
    )
    await line(sse_stack.upstream, f"stream /stream/{name} ended: the gateway closed the connection")
    await settle()
    assert len([text for text in lines_with(sse_stack.gateway, f"/stream/{name}") if "WARNING" in text]) == 1
    assert_handled(sse_stack.gateway)


async def test_the_answer_itself_still_has_to_come_within_the_upstream_timeout(
    sse_stack: Stack, alice: aiohttp.ClientSession
) -> None:
    started = time.monotonic()
    async with alice.get(f"{sse_stack.url}/stream/{tag()}?kind=late&seconds=3") as response:
        assert response.status == 504
    assert time.monotonic() - started < 2.5


async def test_a_slow_upload_is_not_a_slow_answer(sse_stack: Stack, alice: aiohttp.ClientSession) -> None:
    """The answer's clock starts when the request body has been sent, as aiohttp's sock_read did."""

    async def trickle() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b"x" * 1000
            await asyncio.sleep(0.5)

    async with alice.post(f"{sse_stack.url}/drain/{tag()}", data=trickle()) as response:
        assert response.status == 200
        assert await response.json() == {"size": 5000}


async def test_an_upstream_that_stops_taking_an_upload_is_given_up_on(
    sse_stack: Stack, alice: aiohttp.ClientSession
) -> None:
    """Its socket full and no answer: after GATEWAY_UPSTREAM_TIMEOUT without progress the gateway lets go (504,
    or the client's upload cut off as the connection closes), instead of holding both ends for as long as the
    client waits."""

    async def endless() -> AsyncIterator[bytes]:
        for _ in range(4096):  # 256 MiB, far beyond what the sockets and buffers between hold
            yield b"x" * 65536

    name = tag()
    started = time.monotonic()
    with contextlib.suppress(aiohttp.ClientError):
        async with alice.post(f"{sse_stack.url}/deaf/{name}?seconds=30", data=endless()) as response:
            assert response.status == 504
    await line(sse_stack.gateway, f"upstream timed out: POST /deaf/{name}", within=10)
    assert time.monotonic() - started < 10
    assert_handled(sse_stack.gateway)


async def test_an_answer_that_streams_while_the_upload_goes_on_keeps_its_stream_bound(
    sse_stack: Stack, alice: aiohttp.ClientSession
) -> None:
    """The upload ending after the answer began must not start GATEWAY_UPSTREAM_TIMEOUT's clock again."""

    async def trickle() -> AsyncIterator[bytes]:
        for piece in (b"one ", b"two "):
            yield piece
            await asyncio.sleep(0.3)

    name = tag()
    async with alice.post(f"{sse_stack.url}/duplex/{name}?then=2.5", data=trickle()) as response:
        assert response.status == 200
        assert await response.read() == b"one two done"
    await settle()
    assert not [text for text in lines_with(sse_stack.gateway, f"/duplex/{name}") if "WARNING" in text]
    assert_handled(sse_stack.gateway)
