"""A real OpenID Connect provider on loopback: panva's ``oidc-provider`` (OpenID Certified), run by Node.

dev_idp is our own imitation of Cognito, so a gateway bug that matches a dev_idp bug passes every test that uses it.
This provider was written and certified elsewhere; ``tests/oidc_peer/provider.mjs`` only configures it (one
confidential client, alice and bob, short token lifetimes) and adds the password check and a plain login page.
``tests/test_oidc_peer.py`` records what it puts where (ID token vs userinfo, rotation, logout parameters).

It needs Node.js 20.19 or newer and ``npm ci --prefix tests/oidc_peer`` (``make test`` runs that when
``tests/oidc_peer/node_modules`` is missing). Without them a test that asks for the peer is skipped with the reason,
and with ``CI=true`` it fails instead, so CI cannot pass without having run it (as tests/test_browser.py does for
Chromium).
"""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Mapping
from html.parser import HTMLParser

import aiohttp
import pytest
from yarl import URL

from .support import ROOT, CapturedProcess

PEER_DIR = ROOT / "tests" / "oidc_peer"
NODE_MIN = (20, 19)


def _node() -> tuple[str | None, str | None]:
    """The node executable, or why the peer cannot run here."""
    node = shutil.which("node")
    if node is None:
        return None, "no Node.js on this machine (the image ships it; else `apt-get install nodejs npm`)"
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    match = re.fullmatch(r"v(\d+)\.(\d+)\.\d+", version)
    if not match or (int(match.group(1)), int(match.group(2))) < NODE_MIN:
        return None, f"node {version or '?'} is older than {'.'.join(map(str, NODE_MIN))}, which oidc-provider 9 needs"
    if not (PEER_DIR / "node_modules" / "oidc-provider" / "package.json").exists():
        return None, "tests/oidc_peer/node_modules is missing (run `npm ci --prefix tests/oidc_peer`)"
    return node, None


def require_node() -> str:
    """The node executable; otherwise skip the test, or fail it under ``CI=true``."""
    node, problem = _node()
    if node is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {problem}; .ci/run must provide both")
        pytest.skip(f"{problem}: OIDC peer tests not run")
    return node


@dataclasses.dataclass
class OidcPeer:
    """A running provider with its one client. ``issuer`` is spelt as the provider spells it (no trailing slash unless
    started with ``issuer_trailing_slash=True``)."""

    process: CapturedProcess
    issuer: str
    client_id: str
    client_secret: str
    redirect_uri: str
    post_logout_redirect_uri: str

    @property
    def discovery_url(self) -> str:
        # OpenID Connect Discovery 4.1: a terminating "/" of the issuer is removed before the well-known path.
        return f"{self.issuer.rstrip('/')}/.well-known/openid-configuration"

    def requests(self, method: str, url: str) -> list[int]:
        """The statuses of the requests the provider answered so far with this method to this URL or path (query
        ignored), in order. provider.mjs logs each request as it answers it."""
        path = re.escape(URL(url).path)
        line = re.compile(rf"^oidc-peer request {re.escape(method)} {path} (\d{{3}})$")
        return [int(match.group(1)) for match in map(line.match, self.process.output().splitlines()) if match]

    def events(self, event: str) -> int:
        """How often provider.mjs logged ``oidc-peer <event>``, e.g. ``grant refresh_token`` or ``grant revoked``."""
        return self.process.output().splitlines().count(f"oidc-peer {event}")

    def stop(self) -> None:
        self.process.stop()


def start_oidc_peer(
    *,
    redirect_uri: str,
    post_logout_redirect_uri: str,
    token_ttl: int = 300,
    client_id: str = "gateway",
    client_secret: str | None = None,
    conform_id_token_claims: bool = True,
    rotate_refresh_token: bool | None = None,
    clock_tolerance: int | None = None,
    opaque_subjects: bool = False,
    issuer_trailing_slash: bool = False,
    env: Mapping[str, str] | None = None,
) -> OidcPeer:
    """Start the provider on a free loopback port and wait until it prints its issuer.

    ``token_ttl`` is the lifetime of access and ID tokens in seconds. ``conform_id_token_claims=False`` puts the scope
    claims (email, groups, …) into the ID token as well as userinfo. ``rotate_refresh_token`` True or False forces
    rotation on or off; None keeps oidc-provider's policy, which does not rotate this confidential client's token.
    ``clock_tolerance`` is how many seconds past ``exp`` the provider still accepts its own tokens (at userinfo, for
    instance); None keeps oidc-provider's 15, and 0 makes a short ``token_ttl`` expire exactly.
    ``opaque_subjects=True`` makes ``sub`` a UUID per account instead of the login name (so that a test can tell
    ``sub`` from ``preferred_username``); ``issuer_trailing_slash=True`` makes the issuer end in "/", as Auth0's does.
    """
    node = require_node()
    secret = client_secret or secrets.token_urlsafe(24)
    settings = {
        "OIDC_PEER_PORT": "0",
        "OIDC_PEER_CLIENT_ID": client_id,
        "OIDC_PEER_CLIENT_SECRET": secret,
        "OIDC_PEER_REDIRECT_URIS": redirect_uri,
        "OIDC_PEER_POST_LOGOUT_REDIRECT_URIS": post_logout_redirect_uri,
        "OIDC_PEER_TOKEN_TTL": str(token_ttl),
        "OIDC_PEER_CONFORM_ID_TOKEN_CLAIMS": "true" if conform_id_token_claims else "false",
        "OIDC_PEER_ROTATE_REFRESH_TOKEN": "" if rotate_refresh_token is None else str(rotate_refresh_token).lower(),
        "OIDC_PEER_CLOCK_TOLERANCE": "" if clock_tolerance is None else str(clock_tolerance),
        "OIDC_PEER_OPAQUE_SUBJECTS": str(opaque_subjects).lower(),
        "OIDC_PEER_ISSUER_TRAILING_SLASH": str(issuer_trailing_slash).lower(),
        **(env or {}),
    }
    process = CapturedProcess(["provider.mjs"], settings, cwd=PEER_DIR, program=node)
    try:
        issuer = process.wait_for(r"^oidc-peer listening on (http://127\.0\.0\.1:\d+/?)$").group(1)
    except AssertionError:
        process.stop()
        raise
    return OidcPeer(process, issuer, client_id, secret, redirect_uri, post_logout_redirect_uri)


@dataclasses.dataclass
class Form:
    """One HTML form as a browser sees it: where it goes, its fields, and the submit buttons that belong to it."""

    id: str | None
    action: str
    method: str
    fields: dict[str, str] = dataclasses.field(default_factory=dict)
    text_inputs: list[str] = dataclasses.field(default_factory=list)
    password_inputs: list[str] = dataclasses.field(default_factory=list)
    buttons: list[tuple[str, str]] = dataclasses.field(default_factory=list)


class _FormParser(HTMLParser):
    """Collects forms, including buttons outside a form that name it with ``form=`` (the logout page has those)."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []
        self._open: Form | None = None
        self._orphans: list[tuple[str, tuple[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = {key: value or "" for key, value in attrs}
        if tag == "form":
            self._open = Form(attr.get("id"), attr.get("action", ""), attr.get("method", "get").lower())
            self.forms.append(self._open)
        elif tag in ("input", "button"):
            kind = attr.get("type", "text" if tag == "input" else "submit")
            name = attr.get("name")
            owner = self._open
            if kind == "submit":
                button = (name or "", attr.get("value", ""))
                if "form" in attr:
                    self._orphans.append((attr["form"], button))
                elif owner is not None:
                    owner.buttons.append(button)
            elif owner is not None and name:
                owner.fields[name] = attr.get("value", "")
                if kind == "text":
                    owner.text_inputs.append(name)
                elif kind == "password":
                    owner.password_inputs.append(name)

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._open = None

    def close(self) -> None:
        super().close()
        for form_id, button in self._orphans:
            for form in self.forms:
                if form.id == form_id:
                    form.buttons.append(button)


def forms_in(html: str) -> list[Form]:
    parser = _FormParser()
    parser.feed(html)
    parser.close()
    return parser.forms


async def _submit(
    browser: aiohttp.ClientSession, page_url: URL, form: Form, data: dict[str, str]
) -> aiohttp.ClientResponse:
    assert form.method == "post", form
    response = await browser.post(page_url.join(URL(form.action)), data=data, allow_redirects=False)
    await response.read()
    return response


async def follow_inside(browser: aiohttp.ClientSession, response: aiohttp.ClientResponse) -> aiohttp.ClientResponse:
    """Follow redirects while they stay on the provider's origin; return the first page or the redirect that leaves.

    Leaving the provider is where a test wants to look (the code in the Location header) or hand over to the gateway.
    """
    origin = response.url.origin()
    for _ in range(10):
        location = response.headers.get("Location")
        if response.status not in (302, 303) or location is None:
            return response
        target = response.url.join(URL(location))
        if target.origin() != origin:
            return response
        response = await browser.get(target, allow_redirects=False)
        await response.read()
    raise AssertionError(f"more than 10 redirects inside the provider, last at {response.url}")


async def sign_in_form(
    browser: aiohttp.ClientSession, login_page_response: aiohttp.ClientResponse, username: str, password: str
) -> aiohttp.ClientResponse:
    """Fill in the provider's login form as a person would, then any consent page, and return the provider's answer.

    ``login_page_response`` is the 200 login page the authorization request led to (an aiohttp GET of the
    authorization URL that follows redirects lands there). The result is the redirect that leaves the provider, to the
    redirect_uri with ``code`` and ``state`` (or ``error``); with a wrong password it is the 401 login page again.
    """
    html = await login_page_response.text()
    forms = [form for form in forms_in(html) if form.password_inputs]
    assert forms, f"no login form at {login_page_response.url}:\n{html}"
    form = forms[0]
    data = {**form.fields, form.text_inputs[0]: username, form.password_inputs[0]: password}
    response = await follow_inside(browser, await _submit(browser, login_page_response.url, form, data))
    if response.status == 200:
        consent = [form for form in forms_in(await response.text()) if form.id == "consent"]
        if consent:
            submitted = await _submit(browser, response.url, consent[0], dict(consent[0].fields))
            response = await follow_inside(browser, submitted)
    return response


async def confirm_sign_out(
    browser: aiohttp.ClientSession, logout_page_response: aiohttp.ClientResponse
) -> aiohttp.ClientResponse:
    """Answer the provider's "do you want to sign out" page with yes; return the redirect that follows.

    The page holds ``<form id="op.logoutForm" method="post" action="/session/end/confirm">`` with a hidden ``xsrf``
    field, and the yes button (outside the form, ``form="op.logoutForm"``) adds ``logout=yes``. Without a provider
    session the end_session endpoint answers with an auto-submitting form of the same two fields instead; both post the
    same way. The answer is a 303 to the post_logout_redirect_uri (with ``state`` if one was sent) or to the provider's
    own "signed out" page.
    """
    html = await logout_page_response.text()
    forms = [form for form in forms_in(html) if "xsrf" in form.fields]
    assert forms, f"no sign-out form at {logout_page_response.url}:\n{html}"
    form = forms[0]
    data = dict(form.fields)
    data.update((name, value) for name, value in form.buttons if name == "logout" and value == "yes")
    return await _submit(browser, logout_page_response.url, form, data)
