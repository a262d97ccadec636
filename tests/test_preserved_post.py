"""A form POST sent when the session has ended is kept through the sign-in and sent again after it.

The whole round trip needs a browser that runs the gateway's small pages (sessionStorage, an auto-submitting form),
so it runs in Chromium (``tests/test_browser.py``); the refusals (JSON, too big, cross-site, replays) are checked
here with plain HTTP.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from .stack import HTML, Stack, browse_and_sign_in
from .support import new_browser

FORM = {"Content-Type": "application/x-www-form-urlencoded", **HTML}


@pytest.fixture(scope="module")
def kept(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = Stack.start(tmp_path_factory.mktemp("post"), gateway_env={"GATEWAY_PRESERVE_POST_LIMIT": "1KiB"})
    yield running
    running.stop()


async def test_only_small_same_origin_browser_forms_are_kept(kept: Stack) -> None:
    url = f"{kept.url}/api/form"
    async with aiohttp.ClientSession() as client:
        async with client.post(url, data="a=1", headers=FORM, allow_redirects=False) as response:
            assert response.status == 200 and "sessionStorage.setItem" in await response.text()
            assert response.headers["Content-Security-Policy"].startswith("default-src 'none'; script-src 'nonce-")
            assert any("_login_" in c for c in response.headers.getall("Set-Cookie"))
        refused = [
            ("a=" + "x" * 2000, FORM),  # over GATEWAY_PRESERVE_POST_LIMIT
            ('{"a": 1}', {"Content-Type": "application/json", **HTML}),
            ("a=1", {**FORM, "Origin": "https://evil.example"}),
            ("a=1", {"Content-Type": "application/x-www-form-urlencoded", "Accept": "*/*"}),  # not a browser
        ]
        for body, headers in refused:
            async with client.post(url, data=body, headers=headers, allow_redirects=False) as response:
                assert response.status == 401, headers
    assert "POST /api/form" not in kept.upstream.output()


async def test_a_kept_form_is_restored_once_and_only_with_its_sign_ins_cookie(kept: Stack, tmp_path: Path) -> None:
    async with new_browser() as browser:
        async with browser.post(f"{kept.url}/api/form", data="a=1", headers=FORM) as response:
            sealed = re.search(r'setItem\("cognito-gateway-post", "([^"]+)"\)', await response.text())
            assert sealed
        await browse_and_sign_in(browser, f"{kept.url}/")
        restore = f"{kept.url}/oauth2/post_restore"
        async with browser.post(restore, data={"sealed": sealed.group(1)}, headers=HTML) as response:
            assert response.status == 400, "this sign-in did not start from the kept form: no marker cookie"
        async with browser.post(restore, data={"sealed": "garbage"}, headers=HTML) as response:
            assert response.status == 400
    async with aiohttp.ClientSession() as client:
        async with client.post(restore, data={"sealed": sealed.group(1)}, allow_redirects=False) as response:
            assert response.status == 401, "restoring needs a session"


@pytest.mark.parametrize("charset", ["nonsense", "\xff", "utf-16"])
async def test_a_restore_in_a_charset_python_cannot_read_is_a_400_not_a_500(kept: Stack, charset: str) -> None:
    already = len(kept.gateway.lines)
    async with new_browser() as browser:
        await browse_and_sign_in(browser, f"{kept.url}/")
        headers = {**HTML, "Content-Type": f"application/x-www-form-urlencoded; charset={charset}"}
        body = b"sealed=abc"
        async with browser.post(f"{kept.url}/oauth2/post_restore", data=body, headers=headers) as response:
            assert response.status == 400
    assert "Traceback" not in "\n".join(kept.gateway.lines[already:])
