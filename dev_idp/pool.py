"""The running pool: directory, keys, token minter and grants, shared by every handler through one AppKey."""

from __future__ import annotations

import dataclasses
import logging
import secrets
import time
from collections.abc import Callable

from aiohttp import web

from .directory import Client, Directory
from .grants import GrantStore
from .keys import PoolKeys
from .tokens import TokenMinter

log = logging.getLogger("dev_idp")

HOSTED_UI_COOKIE = "cognito"
XSRF_COOKIE = "XSRF-TOKEN"


@dataclasses.dataclass
class Pool:
    directory: Directory
    keys: PoolKeys
    public_url: str
    auto_confirm: bool
    admin_token: str
    clock: Callable[[], float] = time.time
    grants: GrantStore = dataclasses.field(init=False)
    minter: TokenMinter = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.public_url = self.public_url.rstrip("/")
        self.grants = GrantStore(self.clock)
        self.minter = TokenMinter(keys=self.keys, issuer=self.issuer, clock=self.clock)

    @property
    def issuer(self) -> str:
        return f"{self.public_url}/{self.directory.pool_id}"

    @property
    def secure_cookies(self) -> bool:
        return self.public_url.startswith("https://")

    def with_token_lifetimes(self, token_ttl: int | None, refresh_ttl: int | None) -> None:
        """Apply the --token-ttl / --refresh-token-ttl overrides to every client."""
        for client_id, client in list(self.directory.clients.items()):
            changes: dict[str, int] = {}
            if token_ttl is not None:
                changes |= {"access_token_validity": token_ttl, "id_token_validity": token_ttl}
            if refresh_ttl is not None:
                changes["refresh_token_validity"] = refresh_ttl
            self.directory.clients[client_id] = dataclasses.replace(client, **changes)

    def gateway_environment(self, client: Client) -> dict[str, str]:
        """The variables a gateway needs to use this pool with ``client``."""
        env = {
            "GATEWAY_PROVIDER": "cognito",  # dev_idp imitates Cognito, but its issuer is not a cognito-idp host
            "COGNITO_ISSUER": self.issuer,
            "COGNITO_DOMAIN": self.public_url,
            "COGNITO_CLIENT_ID": client.client_id,
        }
        if client.client_secret is not None:
            env["COGNITO_CLIENT_SECRET"] = client.client_secret
        return env


POOL = web.AppKey("pool", Pool)


def redirect(location: str) -> web.Response:
    """A 302 that handlers can still add cookies to (aiohttp wants HTTPFound raised, not returned)."""
    return web.Response(status=302, headers={"Location": location})


def new_admin_token() -> str:
    # Hex, not base64url: a token starting with "-" would be read as an option by `admin --token`.
    return secrets.token_hex(24)
