"""upstream_demo on its own: what it shows and the endpoints the proxy tests rely on."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator

import aiohttp
import pytest

from upstream_demo.app import _PATTERN

from .support import CapturedProcess


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    process = CapturedProcess(["-m", "upstream_demo", "--port", "0"])
    url = process.wait_for(r"listening on (http://\S+)").group(1)
    yield url
    process.stop()


async def test_home_shows_every_identity_header(upstream: str) -> None:
    headers = {"X-Forwarded-User": "alice", "X-Forwarded-Email": "alice@example.com", "X-Forwarded-Groups": "admins"}
    async with aiohttp.ClientSession() as client, client.get(upstream, headers=headers) as response:
        page = await response.text()
    assert "Hello, <b id=user>alice</b>" in page and "alice@example.com" in page and "Sign out" in page


async def test_admin_page_needs_the_admins_group(upstream: str) -> None:
    async with aiohttp.ClientSession() as client:
        async with client.get(f"{upstream}/admin", headers={"X-Forwarded-User": "bob"}) as response:
            assert response.status == 403 and "admins only" in await response.text()
        headers = {"X-Forwarded-User": "alice", "X-Forwarded-Groups": "staff,admins"}
        async with client.get(f"{upstream}/admin", headers=headers) as response:
            assert response.status == 200


async def test_upload_reports_size_and_sha256_and_download_streams(upstream: str) -> None:
    body = b"x" * 3_000_000
    async with aiohttp.ClientSession() as client:
        async with client.post(f"{upstream}/api/upload", data=io.BytesIO(body)) as response:
            assert await response.json() == {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}
        async with client.get(f"{upstream}/api/download", params={"size": "200000"}) as response:
            data = await response.read()
        assert len(data) == 200000 and data[:65536] == _PATTERN
        async with client.get(f"{upstream}/api/download", params={"size": "-1"}) as response:
            assert response.status == 400
