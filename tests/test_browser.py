"""A real browser (headless Chromium driven by Playwright) through dev_idp, the gateway and upstream_demo.

Without Chromium these tests are skipped with a reason that ``make test`` prints; with ``CI=true`` a missing
browser fails the run instead, so CI cannot pass without having run them.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from .stack import Stack
from .support import CHROMIUM, ROOT, launch_chromium

ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def chromium() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true and no Chromium: .ci/run must `apt-get install chromium`")
        pytest.skip("no Chromium on this machine (apt-get install chromium): browser tests not run")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium):  # type: ignore[no-untyped-def]
    context = chromium.new_context(viewport={"width": 900, "height": 640})
    page = context.new_page()
    page.set_default_timeout(15000)
    yield page
    context.close()


def sign_in(page, stack: Stack, path: str = "/", user: str = "alice", password: str = "alice-password") -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{stack.url}{path}")
    page.wait_for_url(re.compile(r".*/login\?.*"))
    page.fill("#signInFormUsername", user)
    page.fill("#signInFormPassword", password)
    page.click("#signInSubmitButton")
    page.wait_for_url(f"{stack.url}{path}")


def test_alice_signs_in_and_the_app_knows_her(page, stack: Stack) -> None:  # type: ignore[no-untyped-def]
    sign_in(page, stack)
    assert page.inner_text("#user") == "alice"
    table = page.inner_text("#identity")
    assert "alice@example.com" in table and "admins" in table
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "signed-in.png"))
    assert (ARTIFACTS / "signed-in.png").stat().st_size > 5000


def test_sign_up_confirm_with_the_logged_code_and_land_signed_in(page, stack: Stack) -> None:  # type: ignore[no-untyped-def]
    username = f"newcomer{secrets.randbelow(10**6)}"
    page.goto(f"{stack.url}/")
    page.wait_for_url(re.compile(r".*/login\?.*"))
    page.click("#signUpLink")
    page.fill("#username", username)
    page.fill("#email", f"{username}@example.com")
    page.fill("#password", "a-long-password")
    page.click("#signUpButton")
    page.wait_for_url(re.compile(r".*/confirm\?.*"))
    code = stack.idp.process.wait_for(rf"confirmation code for {username}: (\d{{6}})").group(1)
    page.fill("#code", code)
    page.click("#confirmButton")
    page.wait_for_url(f"{stack.url}/")
    assert page.inner_text("#user") == username


def test_sign_out_then_the_next_visit_asks_for_the_password(page, stack: Stack) -> None:  # type: ignore[no-untyped-def]
    sign_in(page, stack)
    page.click("#sign-out")
    page.wait_for_url(re.compile(r".*/login\?.*"))
    page.goto(f"{stack.url}/")
    page.wait_for_url(re.compile(r".*/login\?.*"))
    assert page.is_visible("#signInFormPassword"), "the hosted-UI session ended too: the form is shown"


def test_bob_is_refused_the_admins_page(page, stack: Stack) -> None:  # type: ignore[no-untyped-def]
    sign_in(page, stack, "/admin", "bob", "bob-password")
    assert "403: admins only" in page.inner_text("h1")
    assert "bob" in page.inner_text("#message")


@pytest.fixture(scope="module")
def kept_post(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A gateway that keeps form POSTs through a sign-in (GATEWAY_PRESERVE_POST_LIMIT)."""
    running = Stack.start(tmp_path_factory.mktemp("post"), gateway_env={"GATEWAY_PRESERVE_POST_LIMIT": "1KiB"})
    yield running
    running.stop()


def test_a_form_sent_after_the_session_ended_arrives_after_the_sign_in(page, kept_post: Stack) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{kept_post.url}/form")
    page.wait_for_url(re.compile(r".*/login\?.*"))
    page.fill("#signInFormUsername", "alice")
    page.fill("#signInFormPassword", "alice-password")
    page.click("#signInSubmitButton")
    page.wait_for_url(f"{kept_post.url}/form")
    page.fill("#title", "Quarterly report")
    page.fill("#note", "Typed for ten minutes & then the session ran out: <keep me>")
    page.context.clear_cookies()  # the session ends while the page is open (and the IdP's session too)
    page.click("#send")
    page.wait_for_url(re.compile(r".*/login\?.*"))
    page.fill("#signInFormUsername", "alice")
    page.fill("#signInFormPassword", "alice-password")
    page.click("#signInSubmitButton")
    page.wait_for_url(f"{kept_post.url}/api/form")
    echoed = json.loads(page.inner_text("body"))
    assert echoed["method"] == "POST"
    assert echoed["fields"] == [
        ["title", "Quarterly report"],
        ["note", "Typed for ten minutes & then the session ran out: <keep me>"],
    ]
    assert "POST /api/form" in kept_post.upstream.output()
