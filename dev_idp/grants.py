"""The pool's short-lived state: authorization codes, refresh tokens and hosted-UI sessions.

All of it is in memory and keyed by random values; expired entries are dropped when they are next looked at and
swept when new ones are added, so a long-running demo does not grow without bound.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
import uuid
from collections.abc import Callable

from .tokens import Grant

CODE_LIFETIME = 300  # Cognito: codes are valid for five minutes.
HOSTED_UI_SESSION_LIFETIME = 3600  # Cognito: the hosted-UI cookie lasts one hour and cannot be configured.


@dataclasses.dataclass(frozen=True)
class PendingCode:
    grant: Grant
    redirect_uri: str
    code_challenge: str | None
    nonce: str | None
    expires_at: float


@dataclasses.dataclass
class RefreshRecord:
    grant: Grant
    expires_at: float
    revoked: bool = False


class GrantStore:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._codes: dict[str, PendingCode] = {}
        self._refresh: dict[str, RefreshRecord] = {}
        self._sessions: dict[str, tuple[str, float]] = {}
        self.revoked_origin_jtis: set[str] = set()
        self.token_requests: dict[str, int] = {}  # grant_type -> successful token responses, for tests and benches

    # Authorization codes -------------------------------------------------------------------------------------
    def issue_code(self, grant: Grant, *, redirect_uri: str, code_challenge: str | None, nonce: str | None) -> str:
        self._sweep()
        code = str(uuid.uuid4())
        self._codes[code] = PendingCode(grant, redirect_uri, code_challenge, nonce, self._clock() + CODE_LIFETIME)
        return code

    def redeem_code(self, code: str) -> PendingCode | None:
        """Single use: the code is gone after the first attempt, whether that attempt succeeds or not."""
        pending = self._codes.pop(code, None)
        if pending is None or pending.expires_at <= self._clock():
            return None
        return pending

    # Refresh tokens ------------------------------------------------------------------------------------------
    def add_refresh_token(self, token: str, grant: Grant, lifetime: int) -> None:
        self._refresh[token] = RefreshRecord(grant, self._clock() + lifetime)

    def find_refresh_token(self, token: str) -> RefreshRecord | None:
        record = self._refresh.get(token)
        if record is None or record.revoked or record.expires_at <= self._clock():
            return None
        return record

    def revoke_refresh_token(self, token: str, client_id: str) -> None:
        """Revoke a refresh token and, through its ``origin_jti``, every access token minted from it."""
        record = self._refresh.get(token)
        if record is not None and record.grant.client_id == client_id:
            record.revoked = True
            self.revoked_origin_jtis.add(record.grant.origin_jti)

    # Hosted-UI sessions --------------------------------------------------------------------------------------
    def start_session(self, username: str) -> str:
        session_id = secrets.token_urlsafe(32)
        self._sessions[session_id] = (username, self._clock() + HOSTED_UI_SESSION_LIFETIME)
        return session_id

    def session_user(self, session_id: str | None) -> str | None:
        if not session_id:
            return None
        entry = self._sessions.get(session_id)
        if entry is None or entry[1] <= self._clock():
            return None
        return entry[0]

    def end_session(self, session_id: str | None) -> None:
        if session_id:
            self._sessions.pop(session_id, None)

    def _sweep(self) -> None:
        now = self._clock()
        for code in [c for c, p in self._codes.items() if p.expires_at <= now]:
            del self._codes[code]
        for sid in [s for s, (_, exp) in self._sessions.items() if exp <= now]:
            del self._sessions[sid]
        for token in [t for t, r in self._refresh.items() if r.expires_at <= now]:
            del self._refresh[token]
