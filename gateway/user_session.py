"""What the gateway keeps about a signed-in user between requests, and its serialised form.

``UserSession`` holds only what the gateway needs: the verified identity (for the rules and the headers), times
(creation, last use, token expiry) and the refresh token. The ID token is never kept; the access token only with
GATEWAY_PASS_ACCESS_TOKEN (in ``identity.access_token``, replaced at every refresh). The session
backends (``session_backends``) store its ``to_dict()`` form encrypted, in a cookie or in Redis.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .identity import Identity


@dataclasses.dataclass(frozen=True)
class UserSession:
    identity: Identity
    created_at: int  # when the gateway session began (the absolute lifetime counts from here)
    auth_time: int  # when the user last typed a password at the IdP
    token_expires_at: int  # the ID/access tokens' exp at the last sign-in or refresh
    token_lifetime: int = 0  # how long those tokens were valid when issued; 0: not known (an older cookie)
    last_seen: int = 0  # the last request with this session, to within SessionSettings.touch_interval
    refresh_token: str | None = dataclasses.field(default=None, repr=False)
    session_id: str | None = dataclasses.field(default=None, repr=False)  # server-side stores only; never serialised
    audience: str = ""  # the issuer and client id it was signed in with (ProviderSettings.audience)

    @property
    def username(self) -> str:
        return self.identity.name

    def to_dict(self) -> dict[str, Any]:
        identity = self.identity
        return {
            "v": 1,
            "sub": identity.sub,
            "user": identity.username,
            "email": identity.email,
            "ev": identity.email_verified,
            "groups": list(identity.groups),
            "pu": identity.preferred_username,
            "nm": identity.display_name,
            "sc": sorted(identity.scopes),
            "created": self.created_at,
            "auth_time": self.auth_time,
            "exp": self.token_expires_at,
            "lt": self.token_lifetime,
            "seen": self.last_seen,
            "rt": self.refresh_token,
            "aud": self.audience,
        } | ({"at": identity.access_token} if identity.access_token else {})

    @classmethod
    def from_dict(cls, data: Any, *, session_id: str | None = None) -> UserSession | None:
        """The session in ``data``, or None when it is not one this version of the gateway wrote."""
        if not isinstance(data, dict) or data.get("v") != 1:
            return None
        try:
            identity = Identity(
                sub=str(data["sub"]),
                username=str(data["user"]),
                email=data.get("email"),
                email_verified=bool(data.get("ev")),
                groups=tuple(str(g) for g in data.get("groups") or ()),
                preferred_username=data.get("pu"),
                scopes=frozenset(str(s) for s in data.get("sc") or ()),
                display_name=data.get("nm"),
                access_token=data.get("at"),
            )
            return cls(
                identity=identity,
                created_at=int(data["created"]),
                auth_time=int(data["auth_time"]),
                token_expires_at=int(data["exp"]),
                token_lifetime=int(data.get("lt") or 0),
                last_seen=int(data.get("seen") or data["created"]),
                refresh_token=data.get("rt"),
                session_id=session_id,
                audience=str(data.get("aud") or ""),
            )
        except (KeyError, TypeError, ValueError):
            return None

    def refreshed(
        self, identity: Identity, *, token_expires_at: int, refresh_token: str | None, token_lifetime: int = 0
    ) -> UserSession:
        """This session after a refresh: claims as the IdP now states them (groups may have changed), same life."""
        return dataclasses.replace(
            self,
            identity=identity,
            token_expires_at=token_expires_at,
            token_lifetime=token_lifetime,
            # Cognito returns no new refresh token (unless rotation is on): keep the one we have.
            refresh_token=refresh_token or self.refresh_token,
        )

    def expired(self, now: float, *, lifetime: int, idle_timeout: int) -> bool:
        return now >= self.created_at + lifetime or now >= self.last_seen + idle_timeout

    def remaining(self, now: float, lifetime: int) -> int:
        """Seconds of absolute lifetime left: the cookie's Max-Age and the Redis TTL's ceiling."""
        return max(1, self.created_at + lifetime - int(now))
