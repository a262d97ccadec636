"""WebSockets through the gateway, protocol detail by protocol detail, against the echo of tests/stream_upstream.py.

Every server is a real process on loopback. The gateway runs with GATEWAY_UPSTREAM_TIMEOUT=1s (so any quiet
period past a second shows the WebSocket does not live under that bound) and a 1 s heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from aiohttp import WSMsgType

from gateway.websocket_proxy import MAX_MESSAGE

from .stack import HTML, Stack, browse_and_sign_in
from .stream_stack import UNHANDLED, gateway_beside, line, lines_with, machine_token, settle, start_stream_stack, tag
from .support import new_browser
from .test_gateway_proxy import RssSampler

OTHER_ORIGIN = "https://tools.example.com"


@pytest.fixture(scope="module")
def ws_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {
        "GATEWAY_UPSTREAM_TIMEOUT": "1s",
        "GATEWAY_WEBSOCKET_HEARTBEAT": "1s",
        "GATEWAY_WEBSOCKET_ORIGINS": f"{OTHER_ORIGIN}/",
        "GATEWAY_API_CLIENT_IDS": "gateway,reports-bot",
    }
    running = start_stream_stack(tmp_path_factory.mktemp("ws"), env)
    yield running
    running.stop()


@pytest.fixture
async def alice(ws_stack: Stack) -> AsyncIterator[aiohttp.ClientSession]:
    async with new_browser() as browser:
        await browse_and_sign_in(browser, f"{ws_stack.url}/")
        yield browser


def ws_url(stack: Stack, name: str, query: str = "") -> str:
    return f"{stack.url.replace('http', 'ws', 1)}/ws/{name}{query}"


def same_site(stack: Stack) -> dict[str, str]:
    return {"Origin": stack.url}


async def test_text_binary_and_a_mebibyte_come_back_unchanged(ws_stack: Stack, alice: aiohttp.ClientSession) -> None:
    big = os.urandom(1024**2)
    async with alice.ws_connect(ws_url(ws_stack, tag()), headers=same_site(ws_stack)) as ws:
        await ws.send_str("héllo")
        assert (await ws.receive()).data == "héllo"
        await ws.send_bytes(b"\x00\xffbinary")
        message = await ws.receive()
        assert message.type is WSMsgType.BINARY and message.data == b"\x00\xffbinary"
        await ws.send_bytes(big)
        assert (await ws.receive(timeout=10)).data == big
        await ws.send_str("x" * 1024**2)
        assert (await ws.receive(timeout=10)).data == "x" * 1024**2


async def test_the_subprotocol_the_upstream_chose_is_the_clients(ws_stack: Stack, alice: aiohttp.ClientSession) -> None:
    name = tag()
    async with alice.ws_connect(
        ws_url(ws_stack, name), protocols=("chat.v9", "echo.v1"), headers=same_site(ws_stack)
    ) as ws:
        assert ws.protocol == "echo.v1"
    assert lines_with(ws_stack.upstream, f"ws /ws/{name} open protocol=echo.v1")
    async with alice.ws_connect(ws_url(ws_stack, name), headers=same_site(ws_stack)) as ws:
        assert ws.protocol is None, "no subprotocol asked, none answered"


async def test_the_clients_close_code_and_reason_reach_the_upstream(
    ws_stack: Stack, alice: aiohttp.ClientSession
) -> None:
    name = tag()
    ws = await alice.ws_connect(ws_url(ws_stack, name), headers=same_site(ws_stack))
    await ws.send_str("still here?")
    assert (await ws.receive()).data == "still here?"
    await ws.close(code=4001, message=b"done for today")
    assert ws.close_code == 4001, "the upstream's answer (an echo of 4001) came back"
    await line(ws_stack.upstream, rf"ws /ws/{name} closed by client code=4001 reason='done for today'")
    await settle()
    assert not [line for line in lines_with(ws_stack.gateway, f"GET /ws/{name}") if "cut" in line], "a clean close"


async def test_the_upstreams_close_code_and_reason_reach_the_client(
    ws_stack: Stack, alice: aiohttp.ClientSession
) -> None:
    async with alice.ws_connect(ws_url(ws_stack, tag()), headers=same_site(ws_stack)) as ws:
        await ws.send_str("!close 4002 see you later")
        message = await ws.receive(timeout=5)
        assert message.type is WSMsgType.CLOSE
        assert (message.data, message.extra) == (4002, "see you later")


async def test_the_upstream_gets_the_identity_and_never_the_clients_spoofed_headers(
    ws_stack: Stack, alice: aiohttp.ClientSession
) -> None:
    spoofed = {"X-Forwarded-User": "mallory", "X-Forwarded-Email": "mallory@evil.example", "Remote-User": "mallory"}
    async with alice.ws_connect(ws_url(ws_stack, tag()), headers={**same_site(ws_stack), **spoofed}) as ws:
        await ws.send_str("!headers")
        received = json.loads((await ws.receive()).data)
    seen = {name.lower(): value for name, value in received}
    assert seen["x-forwarded-user"] == "alice" and seen["x-forwarded-email"] == "alice@example.com"
    assert "mallory" not in json.dumps(received)
    assert "remote-user" not in seen
    assert "_cognito_gateway" not in seen.get("cookie", ""), "the session cookie stays at the gateway"
    assert seen["origin"] == ws_stack.url and seen["upgrade"].lower() == "websocket"
    # The client offered permessage-deflate; the upstream hop is the gateway's own handshake, without it.
    assert "sec-websocket-extensions" not in seen


async def test_pings_keep_a_quiet_socket_open_past_the_upstream_timeout(
    ws_stack: Stack, alice: aiohttp.ClientSession
) -> None:
    async with alice.ws_connect(ws_url(ws_stack, tag()), headers=same_site(ws_stack), autoping=False) as ws:
        pings, started = 0, time.monotonic()
        while time.monotonic() - started < 3.5:  # GATEWAY_UPSTREAM_TIMEOUT is 1s
            message = await ws.receive(timeout=5)
            assert message.type is WSMsgType.PING, message
            pings += 1
            await ws.pong(message.data)
        assert pings >= 2, "the gateway pings every GATEWAY_WEBSOCKET_HEARTBEAT (1s)"
        await ws.send_str("after the quiet")
        assert (await ws.receive(timeout=5)).data == "after the quiet"


async def test_the_upstreams_pings_are_answered(ws_stack: Stack, alice: aiohttp.ClientSession) -> None:
    name = tag()
    async with alice.ws_connect(ws_url(ws_stack, name, "?heartbeat=0.5"), headers=same_site(ws_stack)) as ws:
        receiving = asyncio.create_task(ws.receive())  # aiohttp's client answers the gateway's pings in receive()
        await asyncio.sleep(3)  # an unanswered ping would make the upstream drop the socket after 0.75 s
        assert not receiving.done()
        await ws.send_str("alive")
        assert (await asyncio.wait_for(receiving, 5)).data == "alive"
    assert not lines_with(ws_stack.upstream, f"ws /ws/{name} ended")


async def test_a_client_that_stops_answering_pings_is_dropped_and_the_upstream_told(
    ws_stack: Stack, alice: aiohttp.ClientSession
) -> None:
    name = tag()
    async with alice.ws_connect(ws_url(ws_stack, name), headers=same_site(ws_stack), autoping=False) as ws:
        started = time.monotonic()
        while (message := await ws.receive(timeout=10)).type is WSMsgType.PING:
            pass  # never answered
        assert message.type in (WSMsgType.CLOSED, WSMsgType.CLOSE, WSMsgType.ERROR)
        assert time.monotonic() - started < 5
    await line(ws_stack.upstream, rf"ws /ws/{name} closed by client code=1001")
    cut = await line(ws_stack.gateway, rf"WARNING .*websocket cut: the client went away.*GET /ws/{name}$")
    assert "PONG" in cut


async def test_the_upstream_vanishing_closes_the_client_with_1014_and_one_warning(
    ws_stack: Stack, alice: aiohttp.ClientSession
) -> None:
    name = tag()
    async with alice.ws_connect(ws_url(ws_stack, name), headers=same_site(ws_stack)) as ws:
        await ws.send_str("!die")
        message = await ws.receive(timeout=5)
        assert message.type is WSMsgType.CLOSE and message.data == 1014  # Bad Gateway
    await line(
        ws_stack.gateway, rf"WARNING \[main\] gateway.websocket: websocket cut: the upstream went away.*GET /ws/{name}$"
    )
    await settle()
    assert len(lines_with(ws_stack.gateway, f"cut: the upstream went away without a close frame: GET /ws/{name}")) == 1
    assert not [line for line in ws_stack.gateway.output().splitlines() if UNHANDLED.search(line)]


async def _raw_handshake(stack: Stack, path: str, cookie: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A browser's handshake by hand, so the test can drop the TCP connection without any close frame."""
    host = stack.url.removeprefix("http://")
    reader, writer = await asyncio.open_connection(*host.split(":"))
    writer.write(
        (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            f"Origin: {stack.url}\r\nCookie: {cookie}\r\n\r\n"
        ).encode()
    )
    status = await reader.readline()
    assert b" 101 " in status, status
    return reader, writer


async def test_the_client_vanishing_closes_the_upstream_with_1001(
    ws_stack: Stack, alice: aiohttp.ClientSession
) -> None:
    name = tag()
    cookie = "; ".join(f"{c.key}={c.value}" for c in alice.cookie_jar)
    _, writer = await _raw_handshake(ws_stack, f"/ws/{name}", cookie)
    await line(ws_stack.upstream, rf"ws /ws/{name} open")
    writer.transport.abort()  # no close frame, no FIN handshake of WebSocket's own: the TCP connection just ends
    await line(ws_stack.upstream, rf"ws /ws/{name} closed by client code=1001")
    await line(
        ws_stack.gateway, rf"WARNING .*websocket cut: the client went away without a close frame: GET /ws/{name}$"
    )


@pytest.mark.parametrize("key", [b"\xff\xfe", b"not base64!", b""])
async def test_a_bad_sec_websocket_key_is_a_400_never_a_500(
    ws_stack: Stack, alice: aiohttp.ClientSession, key: bytes
) -> None:
    name, host = tag(), ws_stack.url.removeprefix("http://")
    cookie = "; ".join(f"{c.key}={c.value}" for c in alice.cookie_jar)
    reader, writer = await asyncio.open_connection(*host.split(":"))
    writer.write(
        f"GET /ws/{name} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n".encode()
        + b"Sec-WebSocket-Key: "
        + key
        + f"\r\nSec-WebSocket-Version: 13\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n".encode()
    )
    status = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    assert b" 400 " in status, status
    assert not lines_with(ws_stack.upstream, f"/ws/{name}")
    assert not [line for line in ws_stack.gateway.output().splitlines() if UNHANDLED.search(line)]


async def test_a_foreign_origin_gets_403_and_never_reaches_the_upstream(
    ws_stack: Stack, alice: aiohttp.ClientSession
) -> None:
    for origin in ("https://evil.example", "null", f"{ws_stack.url}.evil.example", ws_stack.url + "/x"):
        name = tag()
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await alice.ws_connect(ws_url(ws_stack, name), headers={"Origin": origin})
        assert refused.value.status == 403, origin
        assert not lines_with(ws_stack.upstream, f"/ws/{name}"), "refused before the upstream was asked"
    async with alice.ws_connect(ws_url(ws_stack, tag()), headers={"Origin": OTHER_ORIGIN}) as ws:
        await ws.send_str("listed in GATEWAY_WEBSOCKET_ORIGINS")
        assert (await ws.receive()).data == "listed in GATEWAY_WEBSOCKET_ORIGINS"
    async with alice.ws_connect(ws_url(ws_stack, tag())) as ws:
        await ws.send_str("no Origin: not a browser")
        assert (await ws.receive()).data == "no Origin: not a browser"


async def test_without_identity_an_upgrade_gets_401_or_302_and_never_reaches_the_upstream(ws_stack: Stack) -> None:
    name = tag()
    async with aiohttp.ClientSession() as anonymous:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await anonymous.ws_connect(ws_url(ws_stack, name), headers=same_site(ws_stack))
        assert refused.value.status == 401
        handshake = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13"}
        handshake["Sec-WebSocket-Key"] = "dGhlIHNhbXBsZSBub25jZQ=="
        url = f"{ws_stack.url}/ws/{name}"
        async with anonymous.get(url, headers={**handshake, **HTML, **same_site(ws_stack)}, allow_redirects=False) as r:
            assert r.status == 302, "a handshake that asks for HTML is a navigation: sent to sign in"
            assert "/oauth2/authorize?" in r.headers["Location"]
    await settle()
    assert not lines_with(ws_stack.upstream, f"/ws/{name}")


async def test_a_bearer_client_is_not_held_to_the_origin(ws_stack: Stack) -> None:
    """A page cannot put an Authorization header on a WebSocket: a Bearer token is never an ambient credential."""
    token = await machine_token(ws_stack)
    headers = {"Authorization": f"Bearer {token}", "Origin": "https://evil.example"}
    async with aiohttp.ClientSession() as client:
        async with client.ws_connect(ws_url(ws_stack, tag()), headers=headers) as ws:
            await ws.send_str("!headers")
            seen = {name.lower(): value for name, value in json.loads((await ws.receive()).data)}
    assert seen["x-forwarded-client-id"] == "reports-bot" and "x-forwarded-user" not in seen


@pytest.mark.parametrize(("status", "relayed"), [(403, 403), (404, 404), (500, 502), (200, 502)])
async def test_the_upstream_refusing_the_upgrade_is_relayed_never_500(
    ws_stack: Stack, alice: aiohttp.ClientSession, status: int, relayed: int
) -> None:
    url = f"{ws_stack.url.replace('http', 'ws', 1)}/refuse/{tag()}?status={status}"
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await alice.ws_connect(url, headers=same_site(ws_stack))
    assert refused.value.status == relayed


async def test_a_slow_reader_holds_back_the_sender_with_bounded_memory(
    ws_stack: Stack, alice: aiohttp.ClientSession
) -> None:
    count, size = 256, 1024**2
    # Without pings: aiohttp's client answers them only while it reads, and this one is made not to read.
    gateway, url = gateway_beside(ws_stack, GATEWAY_WEBSOCKET_HEARTBEAT="off")
    target = f"{url.replace('http', 'ws', 1)}/ws/{tag()}"
    async with alice.ws_connect(target, headers=same_site(ws_stack), max_msg_size=2 * size) as ws:
        with RssSampler(gateway.proc.pid) as sampler:
            await ws.send_str(f"!burst {count} {size}")
            await asyncio.sleep(3)  # not reading: 256 MiB wait at the upstream, not in the gateway
            received = 0
            for _ in range(count):
                message = await ws.receive(timeout=10)
                assert message.type is WSMsgType.BINARY
                received += len(message.data)
    gateway.stop()
    assert received == count * size
    print(f"gateway RSS growth relaying {count} MiB to a slow reader: {sampler.growth_mib:.1f} MiB")
    assert sampler.growth_mib < 64, sampler.growth_mib


async def test_websockets_off_means_a_plain_get(ws_stack: Stack, alice: aiohttp.ClientSession) -> None:
    gateway, url = gateway_beside(ws_stack, GATEWAY_PROXY_WEBSOCKETS="false")
    try:
        name = tag()
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await alice.ws_connect(f"{url.replace('http', 'ws', 1)}/ws/{name}", headers=same_site(ws_stack))
        assert refused.value.status == 400, "the upstream got a GET without Upgrade and said so"
        assert lines_with(ws_stack.upstream, f"request GET /ws/{name} upgrade=-")
    finally:
        gateway.stop()


async def test_idle_sockets_are_closed_after_the_idle_bound(ws_stack: Stack, alice: aiohttp.ClientSession) -> None:
    gateway, url = gateway_beside(ws_stack, GATEWAY_STREAM_IDLE_TIMEOUT="2s", GATEWAY_WEBSOCKET_HEARTBEAT="off")
    try:
        name = tag()
        async with alice.ws_connect(f"{url.replace('http', 'ws', 1)}/ws/{name}", headers=same_site(ws_stack)) as ws:
            for _ in range(3):  # activity holds the bound off
                await asyncio.sleep(1)
                await ws.send_str("busy")
                assert (await ws.receive(timeout=5)).data == "busy"
            started = time.monotonic()
            message = await ws.receive(timeout=10)
            assert message.type is WSMsgType.CLOSE and (message.data, message.extra) == (1001, "idle timeout")
            assert 1.5 < time.monotonic() - started < 4
        await line(ws_stack.upstream, rf"ws /ws/{name} closed by client code=1001 reason='idle timeout'")
        await line(gateway, rf"WARNING .*websocket cut: no message either way for 2s .*GET /ws/{name}$")
    finally:
        gateway.stop()


async def test_stopping_the_gateway_closes_its_sockets_with_1001_at_once(
    ws_stack: Stack, alice: aiohttp.ClientSession
) -> None:
    gateway, url = gateway_beside(ws_stack)
    name = tag()
    try:
        async with alice.ws_connect(f"{url.replace('http', 'ws', 1)}/ws/{name}", headers=same_site(ws_stack)) as ws:
            started = time.monotonic()
            gateway.proc.terminate()
            message = await ws.receive(timeout=10)
            assert message.type is WSMsgType.CLOSE and message.data == 1001
            assert time.monotonic() - started < 5, "not after the 60 s shutdown timeout"
        await line(ws_stack.upstream, rf"ws /ws/{name} closed by client code=1001 reason='gateway shutting down'")
        assert gateway.proc.wait(10) == 0
    finally:
        gateway.stop()


async def test_a_message_over_the_bound_closes_its_sender_with_1009(
    ws_stack: Stack, alice: aiohttp.ClientSession
) -> None:
    name = tag()
    async with alice.ws_connect(ws_url(ws_stack, name), headers=same_site(ws_stack)) as ws:
        with contextlib.suppress(ConnectionError):  # the gateway may close before the last byte is out
            await ws.send_bytes(b"x" * (MAX_MESSAGE + 1))
        message = await ws.receive(timeout=10)
        assert message.type is WSMsgType.CLOSE and message.data == 1009  # Message Too Big
    await line(ws_stack.upstream, rf"ws /ws/{name} closed by client code=1001")
