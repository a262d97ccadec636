"""A browser-like sign-in, the same loop for every proxy, so "CPU per sign-in" compares like with like.

GET a protected page (Accept: text/html) → 302 to dev_idp's authorize → its login form → POST the credentials →
302 back to the proxy's callback → 302 to the page → the page, from the upstream. Each sign-in uses a fresh
cookie jar and fresh connections, as a new browser would, so no IdP session shortcuts the login form.
"""

from __future__ import annotations

import asyncio
import re

import aiohttp
from peers import BODY
from yarl import URL

HTML = {"Accept": "text/html"}
USERNAME, PASSWORD = "alice", "alice-password"


async def sign_in(origin: str, cookie_prefix: str) -> str:
    """One full sign-in at ``origin``; returns the proxy's session cookie(s) as a ``Cookie`` header value."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        async with browser.get(f"{origin}/bench/page", headers=HTML) as form_page:
            text = await form_page.text()
            form_url = form_page.url
            _expect(form_page.status == 200 and "_csrf" in text, f"{origin}: no login form", form_page, text)
        action = re.search(r'<form method=post action="([^"]+)"', text).group(1).replace("&amp;", "&")  # type: ignore[union-attr]
        csrf = re.search(r'name=_csrf value="([^"]+)"', text).group(1)  # type: ignore[union-attr]
        fields = {"_csrf": csrf, "username": USERNAME, "password": PASSWORD}
        async with browser.post(form_url.join(URL(action)), data=fields, headers=HTML) as landed:
            body = await landed.read()
            _expect(landed.status == 200 and body == BODY, f"{origin}: sign-in did not land", landed, body)
        cookies = [
            c for c in browser.cookie_jar.filter_cookies(URL(origin)).values() if c.key.startswith(cookie_prefix)
        ]
        _expect(bool(cookies), f"{origin}: no {cookie_prefix}* cookie after sign-in", landed, body)
        return "; ".join(f"{cookie.key}={cookie.value}" for cookie in cookies)


def _expect(ok: bool, what: str, response: aiohttp.ClientResponse, body: object) -> None:
    if not ok:
        hops = " → ".join(f"{hop.status} {hop.url}" for hop in (*response.history, response))
        raise SystemExit(f"bench: {what}: {hops}\n{str(body)[:500]}")


def sign_ins(origin: str, cookie_prefix: str, count: int) -> str:
    """``count`` sign-ins one after another (the CPU per sign-in is what is measured); the last one's cookie."""

    async def loop() -> str:
        cookie = ""
        for _ in range(count):
            cookie = await sign_in(origin, cookie_prefix)
        return cookie

    return asyncio.run(loop())
