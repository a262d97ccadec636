"""Login state: one short-lived encrypted cookie per sign-in attempt, bound to its ``state``.

A sign-in needs ``state`` (CSRF), ``nonce`` (ID-token replay) and the PKCE verifier to survive the round trip to
the IdP. Each attempt gets its own cookie, named after a hash of its ``state``, so several tabs signing in at
once do not overwrite each other's state. The callback reads exactly the cookie its ``state`` names and deletes it
(single use). At most ``MAX_PENDING`` attempts are kept: starting another expires the oldest, so repeated sign-ins
cannot grow the browser's cookies without bound.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable

from aiohttp import web

from .config import SessionSettings
from .crypto import LOGIN_PURPOSE, InvalidToken, Sealer
from .session_cookies import CookieAttributes, request_cookies, sent_once

MAX_PENDING = 5
_COMPACT = json.JSONEncoder(separators=(",", ":"))  # built once: json.dumps with options builds one per call
_MAX_INSPECTED = 32  # login cookies looked at per request; any beyond are expired unread


@dataclasses.dataclass(frozen=True)
class LoginAttempt:
    state: str
    nonce: str
    verifier: str
    return_to: str
    started_at: float
    post: bool = False  # a form POST was kept for after the sign-in (preserved_post)

    @classmethod
    def new(cls, return_to: str, now: float, *, post: bool = False) -> LoginAttempt:
        """Fresh state (33 random bytes), nonce (33) and PKCE verifier (63: 84 characters, RFC 7636 allows 43-128),
        from one read of the OS's random source, encoded once: multiples of 3 bytes cut cleanly in base64."""
        fresh = base64.urlsafe_b64encode(secrets.token_bytes(129)).decode("ascii")
        return cls(fresh[:44], fresh[44:88], fresh[88:], return_to, now, post)

    def to_json(self) -> bytes:
        """What the cookie seals; ``LoginAttempt(**json.loads(...))`` reads it back. Written field by field: ``dataclasses.asdict``
        makes a recursive copy that these flat fields do not need, on every sign-in redirect."""
        fields = {
            "state": self.state,
            "nonce": self.nonce,
            "verifier": self.verifier,
            "return_to": self.return_to,
            "started_at": self.started_at,
            "post": self.post,
        }
        return _COMPACT.encode(fields).encode()

    @property
    def code_challenge(self) -> str:
        digest = hashlib.sha256(self.verifier.encode("ascii")).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class LoginStates:
    def __init__(self, settings: SessionSettings, clock: Callable[[], float] = time.time) -> None:
        self._timeout = settings.login_timeout
        self._sealer = Sealer(settings.keys, LOGIN_PURPOSE, clock)
        self._prefix = f"{settings.cookie_name}_login_"
        # Only names this class writes are looked at: another cookie that merely starts with the prefix (a name
        # with ":" or "{", which a Set-Cookie cannot even name) is not ours to open or expire.
        self._ours = re.compile(re.escape(self._prefix) + "[0-9a-f]{16}")
        self._attributes = CookieAttributes.for_login(settings)
        self._clock = clock

    def cookie_name(self, state: str) -> str:
        return self._prefix + hashlib.sha256(state.encode()).hexdigest()[:16]

    def new(self, return_to: str, *, post: bool = False) -> LoginAttempt:
        return LoginAttempt.new(return_to, self._clock(), post=post)

    def remember(self, request: web.Request, response: web.StreamResponse, attempt: LoginAttempt) -> None:
        """Store ``attempt`` in its cookie and expire the oldest pending ones beyond the bound."""
        pending: list[tuple[float, str]] = []
        cookies = request_cookies(request)
        names = [name for name in cookies if self._ours.fullmatch(name)]
        for index, name in enumerate(names):
            existing = self._open(cookies[name]) if index < _MAX_INSPECTED else None
            if existing is None:
                self._attributes.expire(response, name)
            else:
                pending.append((existing.started_at, name))
        pending.sort()
        for _, name in pending[: max(0, len(pending) - (MAX_PENDING - 1))]:
            self._attributes.expire(response, name)
        sealed = self._sealer.seal(attempt.to_json())
        # Padding is stripped so that the value needs no quoting; _open restores it.
        value = sealed.decode("ascii").rstrip("=")
        self._attributes.set(response, self.cookie_name(attempt.state), value, max_age=self._timeout)

    def take(self, request: web.Request, state: str) -> LoginAttempt | None:
        """The attempt that ``state`` names; the caller then ``forget``s it, so a state is used once."""
        name = self.cookie_name(state)
        raw = request_cookies(request).get(name) if sent_once(request, name) else None
        attempt = self._open(raw) if raw is not None else None
        # SECURITY: the cookie must hold this very state (constant-time), not merely share a name hash with it.
        if attempt is None or not hmac.compare_digest(attempt.state.encode(), state.encode()):
            return None
        return attempt

    def forget(self, request: web.Request, response: web.StreamResponse, state: str) -> None:
        name = self.cookie_name(state)
        if name in request_cookies(request):
            self._attributes.expire(response, name)

    def clear_all(self, request: web.Request, response: web.StreamResponse) -> None:
        for name in request_cookies(request):
            if self._ours.fullmatch(name):
                self._attributes.expire(response, name)

    def _open(self, value: str) -> LoginAttempt | None:
        try:
            padded = value + "=" * (-len(value) % 4)
            plain, _ = self._sealer.open(padded.encode("ascii"), ttl=self._timeout)
            attempt = LoginAttempt(**json.loads(plain))
        except (InvalidToken, ValueError, TypeError, UnicodeEncodeError):
            return None
        # SECURITY: the login timeout is also enforced on the attempt's own start time, not only on the sealed-at time.
        return attempt if self._clock() - attempt.started_at < self._timeout else None
