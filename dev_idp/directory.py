"""Users, groups, app clients and resource servers: the part of a user pool that an administrator configures.

The directory is read from a JSON file (``--users`` / ``DEV_IDP_USERS``) or from the built-in
``default_directory.json``. Its format is documented in the README; every problem in the file is reported at once,
naming the entry, so that a typo does not cost one restart per field.
"""

from __future__ import annotations

import dataclasses
import json
import re
import secrets
import uuid
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

# Cognito's own statuses; only CONFIRMED users can finish a sign-in.
UNCONFIRMED = "UNCONFIRMED"
CONFIRMED = "CONFIRMED"

# Cognito's AllowedOAuthFlows values that dev_idp implements ("implicit" is refused, as unauthorized_client).
CODE_FLOW = "code"
CLIENT_CREDENTIALS = "client_credentials"
# The scopes every pool has; any other scope is a resource server's, named "{identifier}/{scope}".
STANDARD_SCOPES = frozenset({"openid", "email", "phone", "profile", "aws.cognito.signin.user.admin"})
_DEFAULT_SCOPES = ("openid", "email", "profile")
# botocore's ResourceServerIdentifierType and ResourceServerScopeNameType: printable ASCII without space, '"' or
# a backslash; a scope name has no '/' either, so "reports/read" splits one way only.
_SERVER_ID = re.compile(r"[\x21\x23-\x5B\x5D-\x7E]{1,256}")
_SCOPE_NAME = re.compile(r"[\x21\x23-\x2E\x30-\x5B\x5D-\x7E]{1,256}")

_SUB_NAMESPACE = uuid.UUID("6f2a8f5e-6c0b-4c49-9c1e-5a1d2b3c4d5e")


class DirectoryError(ValueError):
    """The users file is unreadable or malformed; the message lists every problem."""


@dataclasses.dataclass(frozen=True)
class ResourceServer:
    """An API the pool issues scopes for: Cognito names them ``{identifier}/{scope}``, e.g. ``reports/read``."""

    identifier: str
    scopes: tuple[str, ...]

    @property
    def scope_names(self) -> tuple[str, ...]:
        return tuple(f"{self.identifier}/{scope}" for scope in self.scopes)


def custom_scopes(servers: Mapping[str, ResourceServer]) -> frozenset[str]:
    """Every resource-server scope name the pool defines."""
    return frozenset(name for server in servers.values() for name in server.scope_names)


@dataclasses.dataclass(frozen=True)
class Client:
    """An app client: what Cognito calls a user pool client with OAuth enabled.

    ``allowed_oauth_flows`` is Cognito's AllowedOAuthFlows: ``("code",)`` (which includes refreshing) for a
    relying party such as the gateway, or ``("client_credentials",)`` alone for a machine client.
    """

    client_id: str
    client_secret: str | None
    callback_urls: tuple[str, ...]
    logout_urls: tuple[str, ...]
    allowed_scopes: tuple[str, ...] = _DEFAULT_SCOPES
    access_token_validity: int = 3600
    id_token_validity: int = 3600
    refresh_token_validity: int = 30 * 24 * 3600
    allowed_oauth_flows: tuple[str, ...] = (CODE_FLOW,)

    @property
    def is_public(self) -> bool:
        return self.client_secret is None


@dataclasses.dataclass
class User:
    """A user-pool user. Mutable on purpose: sign-up, confirmation and the admin actions change it."""

    username: str
    password: str
    email: str
    sub: str
    groups: tuple[str, ...] = ()
    status: str = CONFIRMED
    enabled: bool = True
    email_verified: bool = True
    attributes: dict[str, str] = dataclasses.field(default_factory=dict)
    confirmation_code: str | None = None


@dataclasses.dataclass
class Directory:
    pool_id: str
    clients: dict[str, Client]
    users: dict[str, User]
    resource_servers: dict[str, ResourceServer] = dataclasses.field(default_factory=dict)

    @property
    def custom_scopes(self) -> frozenset[str]:
        return custom_scopes(self.resource_servers)

    def find_user(self, username: str) -> User | None:
        """Look a user up by username or e-mail, as the hosted UI accepts either."""
        user = self.users.get(username)
        if user is not None:
            return user
        for candidate in self.users.values():
            if candidate.email and candidate.email.lower() == username.lower():
                return candidate
        return None

    def add_unconfirmed_user(self, username: str, password: str, email: str, *, auto_confirm: bool) -> User:
        user = User(
            username=username,
            password=password,
            email=email,
            sub=str(uuid.uuid4()),
            status=CONFIRMED if auto_confirm else UNCONFIRMED,
            email_verified=auto_confirm,
            confirmation_code=None if auto_confirm else f"{secrets.randbelow(10**6):06d}",
        )
        self.users[username] = user
        return user


def stable_sub(pool_id: str, username: str) -> str:
    """A ``sub`` that survives restarts, so that a demo user keeps one identity across runs."""
    return str(uuid.uuid5(_SUB_NAMESPACE, f"{pool_id}/{username}"))


def load_directory(path: str | Path | None) -> Directory:
    """Read the directory from ``path``, or the built-in default when ``path`` is None."""
    if path is None:
        text = resources.files("dev_idp").joinpath("default_directory.json").read_text("utf-8")
        source = "built-in default directory"
    else:
        try:
            text = Path(path).read_text("utf-8")
        except OSError as exc:
            raise DirectoryError(f"cannot read users file {path}: {exc.strerror}") from None
        source = str(path)
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DirectoryError(f"{source}: not valid JSON: {exc}") from None
    return parse_directory(raw, source=source)


def parse_directory(raw: Any, *, source: str = "directory") -> Directory:
    problems: list[str] = []
    if not isinstance(raw, Mapping):
        raise DirectoryError(f"{source}: the top level must be a JSON object")
    pool_id = raw.get("pool_id", "local_devpool1")
    if not isinstance(pool_id, str) or "_" not in pool_id or not pool_id.replace("_", "").isalnum():
        problems.append("pool_id must look like a Cognito pool id, <region>_<alphanumerics> (e.g. local_devpool1)")
    servers: dict[str, ResourceServer] = {}
    for index, entry in enumerate(_list(raw, "resource_servers", problems)):
        server = _parse_resource_server(entry, f"resource_servers[{index}]", servers, problems)
        if server is not None:
            servers[server.identifier] = server
    clients: dict[str, Client] = {}
    for index, entry in enumerate(_list(raw, "clients", problems)):
        client = _parse_client(entry, f"clients[{index}]", custom_scopes(servers), problems)
        if client is not None:
            clients[client.client_id] = client
    users: dict[str, User] = {}
    for index, entry in enumerate(_list(raw, "users", problems)):
        user = _parse_user(entry, f"users[{index}]", str(pool_id), problems)
        if user is not None:
            users[user.username] = user
    if not clients:
        problems.append("at least one client is required")
    if problems:
        raise DirectoryError(f"{source}: " + "; ".join(problems))
    return Directory(pool_id=str(pool_id), clients=clients, users=users, resource_servers=servers)


def _list(raw: Mapping[str, Any], key: str, problems: list[str]) -> list[Any]:
    value = raw.get(key, [])
    if not isinstance(value, list):
        problems.append(f"{key} must be a list")
        return []
    return value


def _str_list(entry: Mapping[str, Any], key: str, where: str, problems: list[str]) -> tuple[str, ...]:
    value = entry.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        problems.append(f"{where}.{key} must be a list of strings")
        return ()
    return tuple(value)


def _positive_int(entry: Mapping[str, Any], key: str, default: int, where: str, problems: list[str]) -> int:
    value = entry.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        problems.append(f"{where}.{key} must be a positive number of seconds")
        return default
    return value


def _parse_resource_server(
    entry: Any, where: str, seen: Mapping[str, ResourceServer], problems: list[str]
) -> ResourceServer | None:
    identifier = entry.get("identifier") if isinstance(entry, Mapping) else None
    if not isinstance(identifier, str) or not _SERVER_ID.fullmatch(identifier):
        problems.append(f"{where} needs an identifier: printable ASCII without spaces, quotes or backslashes")
        return None
    if identifier in seen:
        problems.append(f"{where}: resource server {identifier!r} is defined twice")
        return None
    scopes = _str_list(entry, "scopes", where, problems)
    bad = [scope for scope in scopes if not _SCOPE_NAME.fullmatch(scope)]
    if bad:
        problems.append(f"{where}.scopes: {bad} are not scope names (no spaces, quotes, backslashes or '/')")
    return ResourceServer(identifier, tuple(scope for scope in scopes if scope not in bad))


def _parse_client(entry: Any, where: str, defined: frozenset[str], problems: list[str]) -> Client | None:
    if not isinstance(entry, Mapping) or not isinstance(entry.get("client_id"), str) or not entry["client_id"]:
        problems.append(f"{where} needs a client_id string")
        return None
    secret = entry.get("client_secret")
    if secret is not None and (not isinstance(secret, str) or not secret):
        problems.append(f"{where}.client_secret must be a non-empty string or absent")
        secret = None
    flows = _oauth_flows(entry, where, secret, problems)
    callbacks = _str_list(entry, "callback_urls", where, problems)
    if CODE_FLOW in flows and not callbacks:
        problems.append(f"{where}.callback_urls must list at least one URL for the code flow")
    scopes = _str_list(entry, "allowed_scopes", where, problems) or _DEFAULT_SCOPES
    _check_scopes(scopes, flows, defined, where, problems)
    return Client(
        client_id=entry["client_id"],
        client_secret=secret,
        callback_urls=callbacks,
        logout_urls=_str_list(entry, "logout_urls", where, problems),
        allowed_scopes=scopes,
        access_token_validity=_positive_int(entry, "access_token_validity", 3600, where, problems),
        id_token_validity=_positive_int(entry, "id_token_validity", 3600, where, problems),
        refresh_token_validity=_positive_int(entry, "refresh_token_validity", 30 * 24 * 3600, where, problems),
        allowed_oauth_flows=flows,
    )


def _oauth_flows(entry: Mapping[str, Any], where: str, secret: str | None, problems: list[str]) -> tuple[str, ...]:
    """The client's flows, held to Cognito's rules, so a file that Cognito would refuse is refused here too."""
    flows = _str_list(entry, "allowed_oauth_flows", where, problems) or (CODE_FLOW,)
    unsupported = [flow for flow in flows if flow not in (CODE_FLOW, CLIENT_CREDENTIALS)]
    if unsupported:
        problems.append(f"{where}.allowed_oauth_flows: {unsupported} not supported (code, client_credentials)")
    if CLIENT_CREDENTIALS in flows:
        if set(flows) != {CLIENT_CREDENTIALS}:
            problems.append(f"{where}.allowed_oauth_flows: client_credentials must be the only flow, as in Cognito")
        if secret is None:
            problems.append(f"{where}: client_credentials needs a client_secret, as in Cognito")
    return flows


def _check_scopes(
    scopes: tuple[str, ...], flows: tuple[str, ...], defined: frozenset[str], where: str, problems: list[str]
) -> None:
    """Cognito refuses a client scope that no resource server defines, and a machine client with no custom scope."""
    unknown = [scope for scope in scopes if scope not in STANDARD_SCOPES and scope not in defined]
    if unknown:
        problems.append(f"{where}.allowed_scopes: {unknown} are not defined by any of resource_servers")
    if CLIENT_CREDENTIALS in flows and not defined & set(scopes):
        problems.append(f"{where}.allowed_scopes: client_credentials needs a resource-server scope, e.g. reports/read")


def _parse_user(entry: Any, where: str, pool_id: str, problems: list[str]) -> User | None:
    if not isinstance(entry, Mapping):
        problems.append(f"{where} must be an object")
        return None
    missing = [key for key in ("username", "password", "email") if not isinstance(entry.get(key), str)]
    if missing:
        problems.append(f"{where} needs string fields: {', '.join(missing)}")
        return None
    attributes = entry.get("attributes", {})
    if not isinstance(attributes, Mapping) or not all(isinstance(v, str) for v in attributes.values()):
        problems.append(f"{where}.attributes must map names to strings (Cognito attributes are strings)")
        attributes = {}
    status = entry.get("status", CONFIRMED)
    if status not in (CONFIRMED, UNCONFIRMED):
        problems.append(f"{where}.status must be {CONFIRMED} or {UNCONFIRMED}")
    return User(
        username=entry["username"],
        password=entry["password"],
        email=entry["email"],
        sub=str(entry.get("sub") or stable_sub(pool_id, entry["username"])),
        groups=_str_list(entry, "groups", where, problems),
        status=status,
        enabled=bool(entry.get("enabled", True)),
        email_verified=bool(entry.get("email_verified", status == CONFIRMED)),
        attributes=dict(attributes),
    )
