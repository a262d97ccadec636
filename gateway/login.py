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
import secrets
import time
from collections.abc import Callable

from aiohttp import web
from cryptography.fernet import InvalidToken, MultiFernet
from yarl import URL

from .config import Settings
from .crypto import LOGIN_PURPOSE, fernet_for
from .session import expire_cookie

MAX_PENDING = 5
_MAX_INSPECTED = 32  # login cookies looked at per request; any beyond are expired unread


@dataclasses.dataclass(frozen=True)
class LoginAttempt:
    state: str
    nonce: str
    verifier: str
    return_to: str
    started_at: float

    @classmethod
    def new(cls, return_to: str, now: float) -> LoginAttempt:
        return cls(secrets.token_urlsafe(32), secrets.token_urlsafe(32), secrets.token_urlsafe(64), return_to, now)

    @property
    def code_challenge(self) -> str:
        digest = hashlib.sha256(self.verifier.encode("ascii")).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class LoginStates:
    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._session = settings.session
        self._fernet: MultiFernet = fernet_for(settings.session.keys, LOGIN_PURPOSE)
        self._prefix = f"{settings.session.cookie_name}_login_"
        self._clock = clock
        # The callback arrives as a top-level cross-site navigation from the IdP: SameSite=Lax (or None) lets the
        # cookie come along; Strict would not.
        samesite = "None" if self._session.samesite == "None" else "Lax"
        self._params = {
            "path": "/",
            "domain": self._session.domain,
            "secure": self._session.secure,
            "httponly": True,
            "samesite": samesite,
        }

    def cookie_name(self, state: str) -> str:
        return self._prefix + hashlib.sha256(state.encode()).hexdigest()[:16]

    def authorize_url(self, authorization_endpoint: str, attempt: LoginAttempt) -> str:
        cognito = self._settings.cognito
        return str(
            URL(authorization_endpoint).update_query(
                response_type="code",
                client_id=cognito.client_id,
                redirect_uri=self._settings.redirect_uri,
                scope=" ".join(cognito.scopes),
                state=attempt.state,
                nonce=attempt.nonce,
                code_challenge=attempt.code_challenge,
                code_challenge_method="S256",
            )
        )

    def remember(self, request: web.Request, response: web.StreamResponse, attempt: LoginAttempt) -> None:
        """Store ``attempt`` in its cookie and expire the oldest pending ones beyond the bound."""
        pending: list[tuple[float, str]] = []
        names = [name for name in request.cookies if name.startswith(self._prefix)]
        for index, name in enumerate(names):
            existing = self._decrypt(request.cookies[name]) if index < _MAX_INSPECTED else None
            if existing is None:
                expire_cookie(response, name, self._params)
            else:
                pending.append((existing.started_at, name))
        pending.sort()
        for _, name in pending[: max(0, len(pending) - (MAX_PENDING - 1))]:
            expire_cookie(response, name, self._params)
        payload = json.dumps(dataclasses.asdict(attempt)).encode()
        response.set_cookie(
            self.cookie_name(attempt.state),
            self._fernet.encrypt(payload).decode("ascii").rstrip("="),
            max_age=self._session.login_timeout,
            **self._params,
        )

    def take(self, request: web.Request, state: str) -> LoginAttempt | None:
        """The attempt that ``state`` names; the caller then ``forget``s it, so a state is used once."""
        raw = request.cookies.get(self.cookie_name(state))
        attempt = self._decrypt(raw) if raw is not None else None
        # SECURITY: the cookie must hold this very state (constant-time), not merely share a name hash with it.
        if attempt is None or not hmac.compare_digest(attempt.state.encode(), state.encode()):
            return None
        return attempt

    def forget(self, request: web.Request, response: web.StreamResponse, state: str) -> None:
        name = self.cookie_name(state)
        if name in request.cookies:
            expire_cookie(response, name, self._params)

    def clear_all(self, request: web.Request, response: web.StreamResponse) -> None:
        for name in request.cookies:
            if name.startswith(self._prefix):
                expire_cookie(response, name, self._params)

    def _decrypt(self, value: str) -> LoginAttempt | None:
        try:
            padded = value + "=" * (-len(value) % 4)  # stripped when set, so the value needs no quoting
            data = json.loads(self._fernet.decrypt(padded.encode("ascii"), ttl=self._session.login_timeout))
            return LoginAttempt(**data)
        except (InvalidToken, ValueError, TypeError, UnicodeEncodeError):
            return None
