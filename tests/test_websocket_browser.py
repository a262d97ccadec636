"""WebSockets of a real browser (headless Chromium) through the gateway, against tests/stream_upstream.py's echo.

Kept apart from test_websockets.py: Playwright's sync API and pytest-asyncio's event loop do not share a module.
"""

from __future__ import annotations

from .stack import Stack
from .stream_stack import lines_with, tag
from .test_browser import chromium, page, sign_in  # noqa: F401  (fixtures)
from .test_websockets import ws_stack, ws_url  # noqa: F401  (the fixture)

_OPEN_AND_ECHO = """async ([url, command]) => {
  const ws = new WebSocket(url, ["echo.v2"]);
  const opened = await new Promise((ok) => { ws.onopen = () => ok(true); ws.onclose = (e) => ok(e.code); });
  if (opened !== true) return {refused: opened};
  ws.send("from the browser");
  const echo = await new Promise((ok) => { ws.onmessage = (e) => ok(e.data); });
  const closed = new Promise((ok) => { ws.onclose = (e) => ok([e.code, e.reason]); });
  ws.send(command);
  return {protocol: ws.protocol, echo, closed: await closed};
}"""


def test_a_browsers_websocket_through_the_gateway(page, ws_stack: Stack) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    sign_in(page, ws_stack, "/")
    name = tag()
    seen = page.evaluate(_OPEN_AND_ECHO, [ws_url(ws_stack, name), "!close 4002 see you"])
    assert seen == {"protocol": "echo.v2", "echo": "from the browser", "closed": [4002, "see you"]}
    seen = page.evaluate(_OPEN_AND_ECHO, [ws_url(ws_stack, tag()), "!die"])
    assert seen["closed"] == [1014, ""], "Chromium accepts 1014 (Bad Gateway) for a lost upstream"


def test_a_page_of_another_site_cannot_use_the_users_cookie_for_a_websocket(page, ws_stack: Stack) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """Cross-site WebSocket hijacking: the browser attaches the gateway's cookie (cookies ignore ports, and a
    WebSocket is not subject to CORS), and only the Origin check stands between that page and the app."""
    sign_in(page, ws_stack, "/")
    page.goto(f"{ws_stack.upstream_url}/")  # another origin: http://127.0.0.1:<the upstream's port>
    name = tag()
    seen = page.evaluate(_OPEN_AND_ECHO, [ws_url(ws_stack, name), "!close 1000 bye"])
    assert seen == {"refused": 1006}, "the handshake got 403; a browser reports that as 1006"
    # The browser can see the refusal before the gateway's log line is read from its pipe: wait for the line.
    refusal = [ws_stack.gateway.wait_for(rf"refused a WebSocket from Origin .*{name}").group(0)]
    assert refusal and f"'{ws_stack.upstream_url}'" in refusal[0]
    assert not lines_with(ws_stack.upstream, f"/ws/{name}")
