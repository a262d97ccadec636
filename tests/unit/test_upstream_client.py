"""gateway.upstream_client against real loopback servers: an aiohttp app for well-formed answers, and raw asyncio
servers that answer with exact bytes (bad heads, interim answers, a stale keep-alive connection)."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from gateway import upstream_client
from gateway.upstream_client import UpstreamClient, UpstreamConnectionError, UpstreamProtocolError, serialise_head

Raw = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _echo(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    if request.path == "/big":
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(64):
            await response.write(b"x" * 65536)
        await response.write_eof()
        return response
    return web.json_response(
        {
            "target": request.raw_path,
            "host": request.host,
            "body": body.decode(),
            "chunked": request.headers.get("Transfer-Encoding"),
            "length": request.headers.get("Content-Length"),
        }
    )


@pytest.fixture
async def echo() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)  # ephemeral port
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


@pytest.fixture
async def client() -> AsyncIterator[UpstreamClient]:
    http = UpstreamClient(ssl_context=None, connect_timeout=2)
    yield http
    await http.close()


async def _raw(handler: Raw) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def _answering(answer: bytes) -> tuple[asyncio.Server, str]:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    return await _raw(handler)


def _url(base: str, target: str) -> URL:
    return URL(base + target, encoded=True)


async def _one_answer_then_stale(client: UpstreamClient, base: str) -> upstream_client._Connection:
    """One GET answered "ok", then its pooled connection, closed by the server but as if that were not noticed."""
    async with client.request("GET", _url(base, "/"), headers=CIMultiDict()) as response:
        assert await response.read() == b"ok"
    await asyncio.sleep(0.05)
    (stale,) = [conn for idle in client._idle.values() for conn in idle]
    stale.closed = False
    return stale


async def test_the_target_goes_byte_for_byte_and_the_connection_is_reused(echo: str, client: UpstreamClient) -> None:
    for _ in range(3):
        async with client.request("GET", _url(echo, "/a/../b%2F?x=1"), headers=CIMultiDict()) as response:
            assert response.status == 200 and response.content_length is not None
            seen = await response.read()
        assert b'"target": "/a/../b%2F?x=1"' in seen and b'"host": "127.0.0.1:' in seen
    assert sum(len(idle) for idle in client._idle.values()) == 1


async def test_a_host_header_given_is_sent_instead_of_the_urls(echo: str, client: UpstreamClient) -> None:
    headers = CIMultiDict({"Host": "app.example"})
    async with client.request("GET", _url(echo, "/"), headers=headers) as response:
        assert b'"host": "app.example"' in await response.read()


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_a_body_without_length_is_chunked_one_with_length_is_not(echo: str, client: UpstreamClient) -> None:
    url = _url(echo, "/upload")
    async with client.request("POST", url, headers=CIMultiDict(), body=_chunks(b"ab", b"cd")) as response:
        seen = await response.read()
    assert b'"body": "abcd"' in seen and b'"chunked": "chunked"' in seen
    sized = CIMultiDict({"Content-Length": "4"})
    async with client.request("PUT", url, headers=sized, body=_chunks(b"ab", b"cd")) as response:
        seen = await response.read()
    assert b'"body": "abcd"' in seen and b'"chunked": null' in seen and b'"length": "4"' in seen


def test_cr_lf_or_nul_in_the_head_is_refused() -> None:
    for headers in ({"X-A": "v\r\nX-Evil: 1"}, {"X-A\n": "v"}, {"X-A": "v\0"}):
        with pytest.raises(ValueError, match="CR, LF or NUL"):
            serialise_head("GET", "/", "h", CIMultiDict(headers), False)
    with pytest.raises(ValueError):
        serialise_head("GET", "/ HTTP/1.1\r\nX: y", "h", CIMultiDict(), False)


async def test_a_big_body_streams_with_backpressure(echo: str, client: UpstreamClient) -> None:
    async with client.request("GET", _url(echo, "/big"), headers=CIMultiDict()) as response:
        await asyncio.sleep(0.2)  # the upstream writes 4 MiB; the client reads none of it yet
        conn = response._conn
        assert conn._buffered <= upstream_client.HIGH_WATER + 2 * 65536
        total = 0
        while chunk := await response.readany():
            total += len(chunk)
    assert total == 64 * 65536


async def test_interim_answers_are_skipped(client: UpstreamClient) -> None:
    server, base = await _answering(
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    )
    async with server:
        async with client.request("GET", _url(base, "/"), headers=CIMultiDict()) as response:
            assert response.status == 200 and await response.read() == b"ok"


async def test_a_body_until_close_and_head_and_204(client: UpstreamClient) -> None:
    server, base = await _answering(b"HTTP/1.1 200 OK\r\n\r\nall of it")
    async with server:
        async with client.request("GET", _url(base, "/"), headers=CIMultiDict()) as response:
            assert await response.read() == b"all of it"
    server, base = await _answering(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
    async with server:
        async with client.request("HEAD", _url(base, "/"), headers=CIMultiDict()) as response:
            assert response.content_length == 100 and await response.read() == b""
    server, base = await _answering(b"HTTP/1.1 204 No Content\r\n\r\n")
    async with server:
        async with client.request("GET", _url(base, "/"), headers=CIMultiDict()) as response:
            assert response.status == 204 and await response.read() == b""


@pytest.mark.parametrize(
    "answer",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 9000 + b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(200)) + b"\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
    ],
)
async def test_a_bad_or_oversized_head_is_a_protocol_error(client: UpstreamClient, answer: bytes) -> None:
    server, base = await _answering(answer)
    async with server:
        with pytest.raises(UpstreamProtocolError):
            async with client.request("GET", _url(base, "/"), headers=CIMultiDict()):
                pass


async def test_a_cut_body_raises_and_the_connection_is_not_kept(client: UpstreamClient) -> None:
    server, base = await _answering(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    async with server:
        async with client.request("GET", _url(base, "/"), headers=CIMultiDict()) as response:
            with pytest.raises(UpstreamConnectionError):
                await response.read()
    assert not any(client._idle.values())


async def test_refused_is_a_connection_error(client: UpstreamClient) -> None:
    server, base = await _answering(b"")
    server.close()
    await server.wait_closed()
    with pytest.raises(UpstreamConnectionError):
        async with client.request("GET", _url(base, "/"), headers=CIMultiDict()):
            pass


async def test_a_stale_keep_alive_connection_is_retried_once_without_a_body(client: UpstreamClient) -> None:
    answered = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal answered
        await reader.readuntil(b"\r\n\r\n")
        answered += 1
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()  # keep-alive promised, but the connection goes away after one answer

    server, base = await _raw(handler)
    async with server:
        stale = await _one_answer_then_stale(client, base)
        async with client.request("GET", _url(base, "/"), headers=CIMultiDict()) as response:
            assert await response.read() == b"ok"
        stale.closed = False
        client._idle[stale.key].append(stale)
        with pytest.raises(UpstreamConnectionError):  # a body cannot be replayed
            async with client.request("POST", _url(base, "/"), headers=CIMultiDict(), body=_chunks(b"x")):
                pass
    assert answered == 2


async def test_a_failing_body_raises_its_own_error_and_closes_the_connection(echo: str, client: UpstreamClient) -> None:
    class TooLarge(Exception):
        pass

    async def body() -> AsyncIterator[bytes]:
        yield b"part"
        raise TooLarge()  # as bodies.PayloadTooLarge is raised while the body streams

    with pytest.raises(TooLarge):
        async with client.request("POST", _url(echo, "/upload"), headers=CIMultiDict(), body=body()):
            pass
    assert not any(client._idle.values())


async def test_bytes_after_a_complete_answer_never_become_a_second_answer(client: UpstreamClient) -> None:
    """Response splitting: a mis-framed upstream's extra bytes, in the same read, must not overwrite the answer."""
    forged = b"HTTP/1.1 302 Found\r\nLocation: http://evil.example/\r\nSet-Cookie: x=1\r\nContent-Length: 0\r\n\r\n"
    server, base = await _answering(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi" + forged)
    async with server:
        async with client.request("GET", _url(base, "/"), headers=CIMultiDict()) as response:
            assert response.status == 200 and "Location" not in response.headers
            assert "Set-Cookie" not in response.headers and response.headers.getall("Content-Length") == ["2"]
            assert await response.read() == b"hi"
    assert not any(client._idle.values())


async def test_a_request_the_upstream_may_have_acted_on_is_not_replayed(client: UpstreamClient) -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head.split(b" ", 1)[0])
        if len(seen) == 1:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
        writer.close()  # the second request (a POST without a body) is read, then the connection just closes

    server, base = await _raw(handler)
    async with server:
        await _one_answer_then_stale(client, base)
        with pytest.raises(UpstreamConnectionError):
            async with client.request("POST", _url(base, "/logout"), headers=CIMultiDict()):
                pass
    assert seen.count(b"POST") <= 1


async def test_a_reset_in_a_body_that_ends_with_the_connection_is_a_cut_not_an_end(client: UpstreamClient) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\npartial")
        await writer.drain()
        await asyncio.sleep(0.05)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close sends RST
        writer.transport.abort()

    server, base = await _raw(handler)
    async with server:
        async with client.request("GET", _url(base, "/"), headers=CIMultiDict()) as response:
            with pytest.raises(UpstreamConnectionError):
                await response.read()


async def test_a_connect_timeout_is_a_timeout_not_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    async def never(*args: object, **kwargs: object) -> None:
        await asyncio.sleep(10)

    http = UpstreamClient(ssl_context=None, connect_timeout=0.05)
    monkeypatch.setattr(asyncio.get_running_loop(), "create_connection", never)
    try:
        with pytest.raises(TimeoutError):
            async with http.request("GET", URL("http://127.0.0.1:9/"), headers=CIMultiDict()):
                pass
    finally:
        await http.close()


async def test_no_answer_head_within_the_answer_timeout_is_a_timeout(client: UpstreamClient) -> None:
    gave_up = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await reader.read()  # never answers; returns when the client gives up and closes
        writer.close()
        gave_up.set()

    server, base = await _raw(silent)
    async with server:
        with pytest.raises(TimeoutError):
            async with client.request("GET", _url(base, "/"), headers=CIMultiDict(), answer_timeout=0.05):
                pass
        assert not any(client._idle.values())  # a connection that timed out is never reused
        await asyncio.wait_for(gave_up.wait(), 2)


async def test_the_answer_timeout_counts_from_the_last_byte_of_the_upload(echo: str, client: UpstreamClient) -> None:
    async def slow_upload() -> AsyncIterator[bytes]:
        for part in (b"ab", b"cd", b"ef"):
            await asyncio.sleep(0.1)  # the whole upload takes longer than the answer timeout
            yield part

    url = _url(echo, "/upload")
    async with client.request("POST", url, headers=CIMultiDict(), body=slow_upload(), answer_timeout=0.15) as response:
        assert response.status == 200 and b'"body": "abcdef"' in await response.read()


async def test_an_answer_in_time_disarms_the_timeout_and_a_small_body_comes_whole(client: UpstreamClient) -> None:
    server, base = await _answering(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
    async with server:
        async with client.request("GET", _url(base, "/"), headers=CIMultiDict(), answer_timeout=0.05) as response:
            await asyncio.sleep(0.1)  # past the answer timeout: it no longer applies once the head is in
            assert response.body_if_complete() == b"hello"
            assert response.body_if_complete() == b""  # taken: nothing is read twice


async def test_an_upload_the_upstream_stops_taking_is_given_up_on(client: UpstreamClient) -> None:
    """An upstream that reads the head, never the body, and never answers: a timeout, not a wait without end."""
    done = asyncio.Event()

    async def deaf(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await done.wait()
        writer.close()

    async def endless() -> AsyncIterator[bytes]:
        while True:
            yield b"x" * 65536

    async def upload(base: str) -> None:
        async with client.request("POST", _url(base, "/"), headers=CIMultiDict(), body=endless(), answer_timeout=0.2):
            pass

    server, base = await _raw(deaf)
    async with server:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(upload(base), 10)  # without the bound, this outer timeout fires at 10 s
        assert loop.time() - started < 5
        done.set()


async def test_a_slow_upstream_that_keeps_reading_an_upload_is_waited_for(client: UpstreamClient) -> None:
    """The stall bound is a time without progress, not a time to drain each chunk: a 16 MiB chunk that takes over
    a second to go is waited for under a 0.6 s bound (progress shows once the kernel takes more of the buffer)."""
    size = 16 * 1024 * 1024

    async def slow_reader(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        got = 0
        while got < size:
            got += len(await reader.read(128 * 1024))
            if got < size // 2:
                await asyncio.sleep(0.02)  # about 6 MB/s for the first half
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    async def upload() -> AsyncIterator[bytes]:
        yield b"x" * size

    server, base = await _raw(slow_reader)
    async with server:
        headers = CIMultiDict({"Content-Length": str(size)})
        async with client.request("PUT", _url(base, "/"), headers=headers, body=upload(), answer_timeout=0.6) as got:
            assert got.status == 200 and await got.read() == b"ok"
