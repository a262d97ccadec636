"""An upstream for the WebSocket and streaming tests: a small aiohttp app, run as its own process.

``python -m tests.stream_upstream --port 0`` prints ``listening on http://…``, then one line for every request it
receives (so a test can show that a request never arrived) and for every WebSocket opened and closed. Tests put a
tag of their own in each path (``/ws/<tag>``, ``/stream/<tag>``) to find their lines in the gateway's log and here.

- ``/ws/<tag>``: a WebSocket echo (text as text, binary as binary) speaking ``echo.v2`` or ``echo.v1``, plus a few
  commands sent as text: ``!headers`` (the handshake's headers as JSON), ``!close CODE REASON``, ``!die`` (drop the
  connection without a close frame), ``!burst COUNT SIZE`` (COUNT binary messages of SIZE bytes). ``?heartbeat=S``
  makes it ping the gateway every S seconds.
- ``/refuse/<tag>?status=N``: answers a handshake with plain HTTP N.
- ``/stream/<tag>?kind=…``: ``sse`` (``count`` events ``interval`` seconds apart, each carrying the monotonic time
  it was written; CLOCK_MONOTONIC is the same clock for every process of the machine), ``pause`` (``a``, then
  ``b`` after ``seconds``; SSE when ``sse=1``, a Content-Length when ``length=1``, otherwise chunked), ``hang`` (one
  event, then nothing), ``die`` (one event, then the connection dropped mid-body), ``late`` (the headers only after
  ``seconds``).
- ``POST /drain/<tag>``: reads the whole body, answers its size.
- ``POST /duplex/<tag>?then=S``: answers at once, echoes the body as it arrives, and ``done`` S seconds after it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import time

from aiohttp import WSMsgType, web
from aiohttp.typedefs import Handler

_PROTOCOLS = ("echo.v2", "echo.v1")


def say(line: str) -> None:
    print(line, flush=True)


@web.middleware
async def announce(request: web.Request, handler: Handler) -> web.StreamResponse:
    say(f"request {request.method} {request.raw_path} upgrade={request.headers.get('Upgrade', '-')}")
    return await handler(request)


async def _command(ws: web.WebSocketResponse, request: web.Request, text: str) -> bool:
    """Run a ``!`` command; False when the socket is done."""
    verb, _, rest = text.partition(" ")
    if verb == "!headers":
        await ws.send_str(json.dumps([[k, v] for k, v in request.headers.items()]))
    elif verb == "!close":
        code, _, reason = rest.partition(" ")
        await ws.close(code=int(code), message=reason.encode())
        say(f"ws {request.path} closed by upstream code={code}")
        return False
    elif verb == "!die":
        assert request.transport is not None
        request.transport.abort()
        return False
    elif verb == "!burst":
        count, size = (int(n) for n in rest.split())
        for _ in range(count):
            await ws.send_bytes(b"x" * size)
    return True


async def websocket(request: web.Request) -> web.StreamResponse:
    heartbeat = float(request.query["heartbeat"]) if "heartbeat" in request.query else None
    ws = web.WebSocketResponse(protocols=_PROTOCOLS, max_msg_size=32 * 1024**2, heartbeat=heartbeat, autoclose=False)
    await ws.prepare(request)
    say(f"ws {request.path} open protocol={ws.ws_protocol} user={request.headers.get('X-Forwarded-User')}")
    while True:
        msg = await ws.receive()
        if msg.type is WSMsgType.TEXT and msg.data.startswith("!"):
            if not await _command(ws, request, msg.data):
                break
        elif msg.type is WSMsgType.TEXT:
            await ws.send_str(msg.data)
        elif msg.type is WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
        elif msg.type is WSMsgType.CLOSE:
            say(f"ws {request.path} closed by client code={msg.data} reason={msg.extra!r}")
            await ws.close(code=msg.data)
            break
        else:
            say(f"ws {request.path} ended {msg.type.name} code={ws.close_code}")
            break
    return ws


async def refuse(request: web.Request) -> web.Response:
    return web.Response(status=int(request.query.get("status", "403")), text="no websocket here")


def _event(seq: int) -> bytes:
    return f"id: {seq}\ndata: {json.dumps({'seq': seq, 'sent': time.monotonic()})}\n\n".encode()


async def _pause(request: web.Request) -> web.StreamResponse:
    q = request.query
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream" if q.get("sse") == "1" else "text/plain"}
    )
    if q.get("length") == "1":
        response.content_length = 2
    await response.prepare(request)
    await response.write(b"a")
    await asyncio.sleep(float(q.get("seconds", "2")))
    await response.write(b"b")
    await response.write_eof()
    return response


async def stream(request: web.Request) -> web.StreamResponse:
    q = request.query
    kind = q.get("kind", "sse")
    if kind == "pause":
        return await _pause(request)
    if kind == "late":
        await asyncio.sleep(float(q.get("seconds", "2")))
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    try:
        count = int(q.get("count", "1")) if kind in ("sse", "late") else 1
        for seq in range(count):
            await response.write(_event(seq))
            await asyncio.sleep(float(q.get("interval", "0")))
        if kind == "hang":
            await asyncio.sleep(3600)
        if kind == "die":
            assert request.transport is not None
            request.transport.abort()
            return response
    except (asyncio.CancelledError, ConnectionError):
        say(f"stream {request.path} ended: the gateway closed the connection")
        raise
    await response.write(b"event: end\ndata: {}\n\n")
    await response.write_eof()
    return response


async def drain(request: web.Request) -> web.Response:
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
    return web.json_response({"size": size})


async def deaf(request: web.Request) -> web.Response:
    """Never reads the upload and answers only after ``seconds``: an upstream stuck on a request body."""
    await asyncio.sleep(float(request.query.get("seconds", "30")))
    return web.Response(text="too late")


async def duplex(request: web.Request) -> web.StreamResponse:
    """Answers at once and echoes the body while it still arrives; ``then`` seconds after its end, ``done``."""
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    await response.prepare(request)
    async for chunk in request.content.iter_any():
        await response.write(chunk)
    await asyncio.sleep(float(request.query.get("then", "0")))
    await response.write(b"done")
    await response.write_eof()
    return response


async def home(request: web.Request) -> web.Response:
    return web.Response(text="stream_upstream")


def create_app() -> web.Application:
    app = web.Application(middlewares=[announce])
    app.router.add_get("/", home)
    app.router.add_get("/ws/{tag}", websocket)
    app.router.add_get("/refuse/{tag}", refuse)
    app.router.add_get("/stream/{tag}", stream)
    app.router.add_post("/drain/{tag}", drain)
    app.router.add_post("/duplex/{tag}", duplex)
    app.router.add_post("/deaf/{tag}", deaf)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.stream_upstream")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    sock = socket.socket()
    sock.bind(("127.0.0.1", args.port))
    say(f"# stream_upstream listening on http://127.0.0.1:{sock.getsockname()[1]}")
    # handler_cancellation: a handler learns at once that the gateway closed the connection (the stream tests ask).
    web.run_app(create_app(), sock=sock, print=None, access_log=None, handler_cancellation=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
