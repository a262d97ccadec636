"""Settings: parsed once from the environment into frozen dataclasses, with every problem reported at once.

``Settings.from_env(os.environ)`` either returns a complete, valid configuration or raises :class:`ConfigError`
whose message names every bad variable. Secrets are wrapped in :class:`Secret` so that no repr, log line or
error message can print them.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import ipaddress
import re
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

from yarl import URL

from .access import AccessRules, email_domains, parse_paths, parse_rules
from .env_reader import EnvReader, parse_size
from .identity import ClaimNames
from .origins import serialized_origin
from .path_table import Entry, PathTable, split_target
from .redirects import safe_redirect_path
from .signing_keys import load_private_keys
from .tls import pem_problems
from .workers import usable_cpus

T = TypeVar("T")

_POOL_ID = re.compile(r"^([a-z]{2}(?:-[a-z]+)+-\d+)_[0-9A-Za-z]+$")
_COOKIE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Signature algorithms a Cognito-style IdP may use. HS* (shared secrets) and "none" are never accepted.
ASYMMETRIC_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"})


# The identity header families GATEWAY_IDENTITY_HEADERS can name (headers.py says which headers each one sends).
IDENTITY_HEADER_FAMILIES = ("oauth2-proxy", "alb", "remote", "grafana")
# GATEWAY_SIGNER_ARN's default: ALB-shaped (aws-jwt-verify refuses anything else), and plainly no real account's.
DEFAULT_SIGNER_ARN = (
    "arn:aws:elasticloadbalancing:us-east-1:000000000000:loadbalancer/app/cognito-gateway/0000000000000000"
)
_ALB_ARN = re.compile(
    r"^arn:aws(?:-cn|-us-gov)?:elasticloadbalancing:[a-z]{2}-(?:gov-)?[a-z]+-\d:\d{12}:"
    r"loadbalancer/app/[A-Za-z0-9](?:[A-Za-z0-9-]{0,30}[A-Za-z0-9])?/[0-9a-f]{16}$"
)


class ConfigError(ValueError):
    """The configuration is invalid; ``problems`` lists every one, each naming its variable."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))


class Secret:
    """A secret value that never shows itself in a repr, a traceback or a log line."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__


@dataclasses.dataclass(frozen=True)
class ProviderSettings:
    """The identity provider: a Cognito user pool (``kind="cognito"``) or any OpenID Connect provider (``"oidc"``)."""

    issuer: str
    domain: str | None
    client_id: str
    client_secret: Secret | None
    scopes: tuple[str, ...]
    algorithms: tuple[str, ...]
    clock_skew: int
    timeout: float
    kind: str = "cognito"
    max_token_lifetime: int = 24 * 3600  # GATEWAY_MAX_TOKEN_LIFETIME: longer-lived tokens are refused
    claims: ClaimNames = dataclasses.field(default_factory=ClaimNames)

    @property
    def is_cognito(self) -> bool:
        return self.kind == "cognito"

    @property
    def audience(self) -> str:
        """What a session is bound to: a sibling deployment sharing the secret but not the client cannot use it."""
        return f"{self.issuer} {self.client_id}"


@dataclasses.dataclass(frozen=True)
class AccessSettings:
    rules: AccessRules
    api_client_ids: frozenset[str] = frozenset()  # empty: Bearer tokens are not accepted
    skip_auth_preflight: bool = False
    # GATEWAY_TRUSTED_PROXIES: peers whose X-Forwarded-* (forward-auth, X-Forwarded-For) are believed
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    set_xauthrequest: bool = True  # GATEWAY_SET_XAUTHREQUEST: X-Auth-Request-* on /oauth2/auth's 202

    def trusts(self, peer: str | None) -> bool:
        if not peer or not self.trusted_proxies:
            return False
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in network for network in self.trusted_proxies)


@dataclasses.dataclass(frozen=True)
class SessionSettings:
    keys: tuple[bytes, ...]  # decoded GATEWAY_SESSION_SECRET entries; the first encrypts, all decrypt
    cookie_name: str
    lifetime: int
    login_timeout: int
    secure: bool
    samesite: str
    domain: str | None
    idle_timeout: int = 2 * 3600
    refresh_before: int = 300  # refresh when the tokens expire within this many seconds
    refresh_grace: int = 600  # on an IdP outage, keep a session this long past its tokens' expiry
    store: str = "cookie"  # "cookie" or "redis"
    redis_url: str | None = None
    redis_cache: bool = True  # GATEWAY_REDIS_CACHE: per-process copies kept true by Redis's invalidations
    base_cookie_name: str = ""  # GATEWAY_COOKIE_NAME as given, when cookie_name carries the __Host- prefix
    preserve_post_limit: int = 64 * 1024  # GATEWAY_PRESERVE_POST_LIMIT: form POSTs kept through a sign-in; 0: off

    @property
    def cookie_names(self) -> tuple[str, ...]:
        """The session cookie's name, and the unprefixed one: no cookie of either name ever goes upstream."""
        return tuple(dict.fromkeys(name for name in (self.cookie_name, self.base_cookie_name) if name))

    @property
    def touch_interval(self) -> int:
        """How stale ``last_seen`` may get before it is written again (bounds the writes idle tracking costs)."""
        return max(1, min(60, self.idle_timeout // 10))

    def __repr__(self) -> str:  # the keys (and a Redis URL's password) are secrets
        return f"SessionSettings(store={self.store!r}, cookie_name={self.cookie_name!r}, lifetime={self.lifetime}, keys=<{len(self.keys)}>)"


@dataclasses.dataclass(frozen=True)
class UpstreamSettings:
    url: URL | None  # GATEWAY_UPSTREAM: where requests go that no GATEWAY_UPSTREAMS entry names (None: a 404)
    connect_timeout: float
    read_timeout: float
    pass_host_header: bool
    pass_authorization: bool = False
    strip_headers: tuple[str, ...] = ()  # GATEWAY_STRIP_HEADERS: names, or prefixes ending in *
    routes: tuple[Entry[URL | None], ...] = ()  # GATEWAY_UPSTREAMS

    @functools.cached_property
    def table(self) -> PathTable[URL | None]:
        """Built once (a frozen dataclass may cache a derived value): looked up on every proxied request."""
        return PathTable(self.routes, default=self.url)

    @property
    def all_urls(self) -> tuple[URL, ...]:
        return tuple(url for url in (self.url, *(route.value for route in self.routes)) if url is not None)


@dataclasses.dataclass(frozen=True)
class IdentityHeaderSettings:
    """Which identity headers the upstream gets, and how ``x-amzn-oidc-data`` is signed."""

    families: frozenset[str] = frozenset({"oauth2-proxy", "alb"})  # GATEWAY_IDENTITY_HEADERS
    signed: bool = True  # GATEWAY_SIGNED_HEADER: x-amzn-oidc-data (in the alb family)
    signer_arn: str = DEFAULT_SIGNER_ARN  # GATEWAY_SIGNER_ARN: the header's "signer"
    signing_key: Secret | None = None  # GATEWAY_SIGNING_KEY: PEM; None derives the keys from the session secrets
    pass_access_token: bool = False  # GATEWAY_PASS_ACCESS_TOKEN


@dataclasses.dataclass(frozen=True)
class StreamSettings:
    """WebSockets and long-lived responses (SSE, long polls): how they are proxied and when an idle one is cut."""

    proxy_websockets: bool = True  # GATEWAY_PROXY_WEBSOCKETS
    websocket_origins: frozenset[str] = frozenset()  # GATEWAY_WEBSOCKET_ORIGINS, besides GATEWAY_PUBLIC_URL's
    websocket_heartbeat: float | None = 30.0  # GATEWAY_WEBSOCKET_HEARTBEAT: ping each side this often; None: never
    idle_timeout: float | None = 3600.0  # GATEWAY_STREAM_IDLE_TIMEOUT: None ("off"): a quiet stream is never cut


@dataclasses.dataclass(frozen=True)
class TlsSettings:
    """TLS the gateway serves itself (both files set) and the CAs an https upstream is verified against."""

    cert_file: Path | None = None  # GATEWAY_TLS_CERT_FILE: PEM chain, leaf first; reloaded when it changes
    key_file: Path | None = None  # GATEWAY_TLS_KEY_FILE: its PEM private key, unencrypted
    redirect_listen: tuple[str, int] | None = None  # GATEWAY_HTTP_REDIRECT_LISTEN: plain http, redirects only
    upstream_ca_file: Path | None = None  # GATEWAY_UPSTREAM_CA_FILE: instead of the system CAs

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None


@dataclasses.dataclass(frozen=True)
class ServerSettings:
    """How the listener treats connections, and the processes that serve it (``server``, ``workers``)."""

    header_timeout: float = 20.0  # GATEWAY_HEADER_TIMEOUT: a request head must be complete within this
    keepalive_timeout: float = 75.0  # GATEWAY_KEEPALIVE_TIMEOUT: an idle keep-alive connection is closed after this
    max_connections: int = 10_000  # GATEWAY_MAX_CONNECTIONS: open connections per worker process
    max_body_size: int | None = None  # GATEWAY_MAX_BODY_SIZE: 413 beyond it; None: no limit
    workers: int = 1  # GATEWAY_WORKERS: processes sharing the port; 1 serves in the main process
    shutdown_timeout: float = 30.0  # GATEWAY_SHUTDOWN_TIMEOUT: how long SIGTERM waits for in-flight requests
    event_loop: str = "uvloop"  # GATEWAY_EVENT_LOOP: "uvloop" (libuv; measured in bench/README.md) or "asyncio"


@dataclasses.dataclass(frozen=True)
class ObservabilitySettings:
    """What the gateway tells its operator: metrics on a private listener, and how log lines are written."""

    metrics_listen: tuple[str, int] | None = None  # GATEWAY_METRICS_LISTEN: None: no metrics listener
    log_format: str = "text"  # GATEWAY_LOG_FORMAT: "text" or "json"
    access_log: bool = True  # GATEWAY_ACCESS_LOG: one line per request


@dataclasses.dataclass(frozen=True)
class Settings:
    public_url: URL
    listen_host: str
    listen_port: int
    callback_path: str
    sign_out_redirect: str
    log_level: str
    provider: ProviderSettings
    session: SessionSettings
    upstream: UpstreamSettings
    access: AccessSettings
    tls: TlsSettings = dataclasses.field(default_factory=TlsSettings)
    identity_headers: IdentityHeaderSettings = dataclasses.field(default_factory=IdentityHeaderSettings)
    observability: ObservabilitySettings = dataclasses.field(default_factory=ObservabilitySettings)
    server: ServerSettings = dataclasses.field(default_factory=ServerSettings)
    streams: StreamSettings = dataclasses.field(default_factory=StreamSettings)

    @functools.cached_property
    def redirect_uri(self) -> str:
        """The callback URL registered with Cognito: derived from configuration only, never from a request.
        Built once (a frozen dataclass may cache a derived value): every sign-in and callback reads it."""
        return str(self.public_url.with_path(self.callback_path))

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        return _Parser(environ).settings()


def parse_networks(text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """``10.0.0.0/8, 127.0.0.1`` (a bare address is a /32 or /128)."""
    networks = []
    for entry in (e.strip() for e in text.split(",") if e.strip()):
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an address or CIDR range") from None
    return tuple(networks)


def _is_cognito_issuer(url: URL) -> bool:
    host = url.host or ""
    return host.startswith("cognito-idp.") and host.endswith(".amazonaws.com")


def parse_host_port(raw: str) -> tuple[str, int] | None:
    """``0.0.0.0:8080`` or ``[::]:8080`` to (host, port); None when it is not that."""
    host, sep, port_text = raw.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        return None
    return host, int(port_text)


def decode_session_key(raw: str) -> bytes:
    """One GATEWAY_SESSION_SECRET entry: at least 32 random bytes, as hex or (standard or URL-safe) base64."""
    text = raw.strip()
    if re.fullmatch(r"[0-9a-fA-F]{64,}", text):
        key = bytes.fromhex(text)
    else:
        try:
            key = base64.b64decode(text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("not hex or base64") from None
    if len(key) < 32:
        raise ValueError(f"decodes to {len(key)} bytes; at least 32 are needed")
    if len(set(key)) < 16:
        raise ValueError("does not look random")
    return key


# docker-compose.yml's default for GATEWAY_SESSION_SECRET ("demo-only-session-secret-change-me!"): published.
DEMO_SESSION_SECRET = "ZGVtby1vbmx5LXNlc3Npb24tc2VjcmV0LWNoYW5nZS1tZSE="  # noqa: S105 (public: it is refused)
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


class _Parser(EnvReader):
    """The sections of the configuration, each read with every problem collected."""

    # ----------------------------------------------------------------------------------------------------------
    def settings(self) -> Settings:
        public_url = self.url(
            "GATEWAY_PUBLIC_URL",
            self.required("GATEWAY_PUBLIC_URL", "e.g. https://app.example.com"),
            path_allowed=False,
        )
        provider = self.provider()
        session = self.session(public_url)
        self.refuse_the_demo_secret(provider)
        upstream = self.upstream()
        access = self.access()
        host, port = self.listen()
        tls = self.tls(public_url, port)
        identity_headers = self.identity_headers()
        observability = self.observability(port, tls.redirect_listen)
        server = self.server()
        streams = self.streams()
        callback_path, sign_out_redirect, log_level = self.paths_and_logging()
        if self.problems:
            raise ConfigError(self.problems)
        assert public_url is not None and provider is not None and session is not None and upstream is not None
        assert access is not None
        return Settings(
            public_url=public_url.with_path(""),
            listen_host=host,
            listen_port=port,
            callback_path=callback_path,
            sign_out_redirect=sign_out_redirect,
            log_level=log_level,
            provider=provider,
            session=session,
            upstream=upstream,
            access=access,
            tls=tls,
            identity_headers=identity_headers,
            observability=observability,
            server=server,
            streams=streams,
        )

    def issuer(self) -> tuple[URL | None, bool]:
        """COGNITO_ISSUER, or the issuer of COGNITO_USER_POOL_ID; and whether it names a Cognito pool."""
        issuer = self.raw("COGNITO_ISSUER")
        pool_id = self.raw("COGNITO_USER_POOL_ID")
        if issuer is None and pool_id is None:
            self.problems.append(
                "COGNITO_USER_POOL_ID: required (e.g. eu-west-1_AbC123xyz), unless COGNITO_ISSUER is set"
            )
        elif issuer is None and pool_id is not None:
            match = _POOL_ID.match(pool_id)
            if match is None:
                self.problems.append(f"COGNITO_USER_POOL_ID: {pool_id!r} is not a pool id like eu-west-1_AbC123xyz")
            else:
                issuer = f"https://cognito-idp.{match.group(1)}.amazonaws.com/{pool_id}"
        url = self.url("COGNITO_ISSUER", issuer)
        return url, pool_id is not None or (url is not None and _is_cognito_issuer(url))

    def scopes(self, kind: str) -> tuple[str, ...]:
        scopes = tuple((self.raw("GATEWAY_SCOPES") or "openid email profile").replace(",", " ").split())
        if "openid" not in scopes:
            self.problems.append("GATEWAY_SCOPES: must include openid (without it the IdP issues no ID token)")
        if kind == "cognito" and "groups" in scopes:
            self.problems.append(
                "GATEWAY_SCOPES: Cognito rejects the 'groups' scope (invalid_scope); groups arrive in cognito:groups"
            )
        return scopes

    def algorithms(self) -> tuple[str, ...]:
        algorithms = tuple((self.raw("GATEWAY_TOKEN_ALGORITHMS") or "RS256").replace(",", " ").split())
        bad = [a for a in algorithms if a not in ASYMMETRIC_ALGORITHMS]
        if bad:
            self.problems.append(
                f"GATEWAY_TOKEN_ALGORITHMS: {', '.join(bad)} not allowed; use asymmetric ones such as RS256"
            )
        return algorithms

    def paths_and_logging(self) -> tuple[str, str, str]:
        """GATEWAY_CALLBACK_PATH, GATEWAY_SIGN_OUT_REDIRECT and GATEWAY_LOG_LEVEL."""
        callback_path = self.raw("GATEWAY_CALLBACK_PATH") or "/cognito_redirect"
        # Not "/" nor any path ending in "/": every other method on the callback path is the gateway's 405.
        if not re.fullmatch(r"/[A-Za-z0-9._~/-]*[A-Za-z0-9._~-]", callback_path) or callback_path.startswith(
            "/oauth2/"
        ):
            self.problems.append(
                f"GATEWAY_CALLBACK_PATH: {callback_path!r} must be a plain absolute path outside /oauth2/, not ending in /"
            )
        sign_out_redirect = self.raw("GATEWAY_SIGN_OUT_REDIRECT") or "/"
        if safe_redirect_path(sign_out_redirect) is None:
            self.problems.append(f"GATEWAY_SIGN_OUT_REDIRECT: {sign_out_redirect!r} must be a same-origin path like /")
        log_level = (self.raw("GATEWAY_LOG_LEVEL") or "info").upper()
        if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            self.problems.append(f"GATEWAY_LOG_LEVEL: {log_level.lower()!r} is not debug, info, warning or error")
        return callback_path, sign_out_redirect, log_level

    def provider(self) -> ProviderSettings | None:
        issuer_url, names_a_pool = self.issuer()
        kind = (self.raw("GATEWAY_PROVIDER") or ("cognito" if names_a_pool else "oidc")).lower()
        if kind not in ("cognito", "oidc"):
            self.problems.append(f"GATEWAY_PROVIDER: {kind!r} is not cognito or oidc")
        domain_url = self.url("COGNITO_DOMAIN", self.raw("COGNITO_DOMAIN"), path_allowed=False)
        client_id = self.required("COGNITO_CLIENT_ID", "the app client id from the Cognito console or stack outputs")
        secret = self.raw("COGNITO_CLIENT_SECRET")
        settings = {
            "kind": kind,
            "claims": self.claim_names(),
            "scopes": self.scopes(kind),
            "algorithms": self.algorithms(),
            "clock_skew": int(self.duration("GATEWAY_CLOCK_SKEW", 60, minimum=0)),
            "timeout": self.duration("GATEWAY_IDP_TIMEOUT", 10),
            "max_token_lifetime": int(self.duration("GATEWAY_MAX_TOKEN_LIFETIME", 24 * 3600, minimum=60)),
        }
        if issuer_url is None or client_id is None:
            return None
        return ProviderSettings(
            # SECURITY: OIDC Core 3.1.3.7 step 2: iss must match the issuer exactly, so a generic provider's issuer
            # is kept as written (Auth0's ends in "/"); Cognito's never does, so a stray "/" there is dropped.
            issuer=str(issuer_url).rstrip("/") if kind == "cognito" else str(issuer_url),
            domain=str(domain_url.with_path("")) if domain_url is not None else None,
            client_id=client_id,
            client_secret=Secret(secret) if secret is not None else None,
            **settings,
        )

    def claim_names(self) -> ClaimNames:
        user = self.raw("GATEWAY_USER_CLAIM")
        return ClaimNames(
            user=(user, "sub") if user and user != "sub" else (("sub",) if user else ClaimNames.user),
            groups=self.raw("GATEWAY_GROUPS_CLAIM") or ClaimNames.groups,
            email=self.raw("GATEWAY_EMAIL_CLAIM") or ClaimNames.email,
        )

    def access(self) -> AccessSettings | None:
        public_paths = self.parsed("GATEWAY_PUBLIC_PATHS", parse_paths, ())
        rules = self.parsed("GATEWAY_RULES", parse_rules, ())
        table = AccessRules.build(
            public_paths=public_paths,
            rules=rules,
            allowed_groups=self.listed("GATEWAY_ALLOWED_GROUPS"),
            allowed_email_domains=email_domains(self.listed("GATEWAY_ALLOWED_EMAIL_DOMAINS")),
        )
        return AccessSettings(
            rules=table,
            api_client_ids=self.listed("GATEWAY_API_CLIENT_IDS"),
            skip_auth_preflight=self.boolean("GATEWAY_SKIP_AUTH_PREFLIGHT", False),
            trusted_proxies=self.parsed("GATEWAY_TRUSTED_PROXIES", parse_networks, ()),
            set_xauthrequest=self.boolean("GATEWAY_SET_XAUTHREQUEST", True),
        )

    def refuse_the_demo_secret(self, provider: ProviderSettings | None) -> None:
        """docker-compose.yml's default secret is published: fine for its dev_idp on this machine, for nothing else."""
        entries = {entry.strip() for entry in (self.raw("GATEWAY_SESSION_SECRET") or "").split(",")}
        host = URL(provider.issuer).host if provider is not None else None
        # SECURITY: with a public secret anyone can seal a session cookie for any user (and derive the signing key).
        if DEMO_SESSION_SECRET in entries and host not in _LOOPBACK_HOSTS:
            self.problems.append(
                "GATEWAY_SESSION_SECRET: the demo secret of docker-compose.yml is public and only for dev_idp on "
                "localhost; set your own (openssl rand -base64 32)"
            )

    def session_keys(self) -> tuple[bytes, ...] | None:
        raw = self.required(
            "GATEWAY_SESSION_SECRET", "at least 32 random bytes as base64 or hex, e.g. from `openssl rand -base64 32`"
        )
        if raw is None:
            return None
        keys: list[bytes] = []
        for index, entry in enumerate(raw.split(",")):
            try:
                keys.append(decode_session_key(entry))
            except ValueError as exc:
                # SECURITY: the message names the entry's position, never its value.
                self.problems.append(f"GATEWAY_SESSION_SECRET: entry {index + 1} {exc}")
        return tuple(keys) if len(keys) == len(raw.split(",")) else None

    def cookie(self, public_url: URL | None) -> dict[str, object]:
        cookie_name = self.raw("GATEWAY_COOKIE_NAME") or "_cognito_gateway"
        if not _COOKIE_NAME.match(cookie_name):
            self.problems.append(f"GATEWAY_COOKIE_NAME: {cookie_name!r} must be 1-64 letters, digits, _ or -")
        https = public_url is not None and public_url.scheme == "https"
        secure = self.boolean("GATEWAY_COOKIE_SECURE", https)
        samesite = (self.raw("GATEWAY_COOKIE_SAMESITE") or "lax").capitalize()
        if samesite not in ("Lax", "Strict", "None"):
            self.problems.append(f"GATEWAY_COOKIE_SAMESITE: {samesite.lower()!r} is not lax, strict or none")
        elif samesite == "None" and not secure:
            self.problems.append("GATEWAY_COOKIE_SAMESITE: none needs secure cookies (an https GATEWAY_PUBLIC_URL)")
        domain = self.raw("GATEWAY_COOKIE_DOMAIN")
        # SECURITY: __Host- makes the browser refuse a cookie of this name set by a sibling subdomain or over http
        # (cookie tossing): it must be Secure, Path=/ and have no Domain, which is what the gateway writes.
        prefixed = https and secure and domain is None
        return {
            "cookie_name": f"__Host-{cookie_name}" if prefixed else cookie_name,
            "base_cookie_name": cookie_name,
            "secure": secure,
            "samesite": samesite,
            "domain": domain,
        }

    def session_store(self) -> dict[str, str | bool | None]:
        store = (self.raw("GATEWAY_SESSION_STORE") or "cookie").lower()
        redis_url = self.raw("GATEWAY_REDIS_URL")
        if store not in ("cookie", "redis"):
            self.problems.append(f"GATEWAY_SESSION_STORE: {store!r} is not cookie or redis")
        elif store == "redis" and redis_url is None:
            self.problems.append(
                "GATEWAY_REDIS_URL: required when GATEWAY_SESSION_STORE=redis (e.g. redis://redis:6379/0)"
            )
        if redis_url is not None and URL(redis_url).scheme not in ("redis", "rediss", "unix"):
            # SECURITY: the URL may hold a password, so only its scheme is quoted back.
            self.problems.append("GATEWAY_REDIS_URL: must start with redis://, rediss:// or unix://")
        return {"store": store, "redis_url": redis_url, "redis_cache": self.boolean("GATEWAY_REDIS_CACHE", True)}

    def session(self, public_url: URL | None) -> SessionSettings | None:
        keys = self.session_keys()
        cookie, store = self.cookie(public_url), self.session_store()
        lifetimes = {
            "lifetime": int(self.duration("GATEWAY_SESSION_LIFETIME", 12 * 3600, minimum=60)),
            "idle_timeout": int(self.duration("GATEWAY_SESSION_IDLE_TIMEOUT", 2 * 3600, minimum=10)),
            "login_timeout": int(self.duration("GATEWAY_LOGIN_TIMEOUT", 15 * 60, minimum=30)),
            "refresh_before": int(self.duration("GATEWAY_REFRESH_BEFORE", 300, minimum=0)),
            "refresh_grace": int(self.duration("GATEWAY_REFRESH_GRACE", 600, minimum=0)),
            "preserve_post_limit": self.parsed("GATEWAY_PRESERVE_POST_LIMIT", parse_size, 64 * 1024),
        }
        if keys is None:
            return None
        return SessionSettings(keys=keys, **cookie, **store, **lifetimes)  # type: ignore[arg-type]

    def upstream_routes(self) -> tuple[Entry[URL | None], ...]:
        """GATEWAY_UPSTREAMS: ``;``-separated ``[HOST]PATH=URL`` entries."""
        routes = []
        for entry in (e.strip() for e in (self.raw("GATEWAY_UPSTREAMS") or "").split(";") if e.strip()):
            target, sep, raw_url = entry.partition("=")
            try:
                if not sep:
                    raise ValueError("is not [HOST]PATH=URL")
                host, path = split_target(target)
            except ValueError as exc:
                self.problems.append(f"GATEWAY_UPSTREAMS: {entry!r}: {exc}")
                continue
            url = self.url("GATEWAY_UPSTREAMS", raw_url.strip())
            if url is not None:
                routes.append(Entry(path, url, host))
        return tuple(routes)

    def upstream(self) -> UpstreamSettings | None:
        reported = len(self.problems)
        routes = self.upstream_routes()
        raw = self.raw("GATEWAY_UPSTREAM")
        # Required unless GATEWAY_UPSTREAMS gave routes, or was already reported as bad (one report per mistake);
        # an empty GATEWAY_UPSTREAMS gives no routes and no report, so it still needs GATEWAY_UPSTREAM.
        if raw is None and not routes and len(self.problems) == reported:
            raw = self.required("GATEWAY_UPSTREAM", "the URL of the app to protect (or GATEWAY_UPSTREAMS)")
        url = self.url("GATEWAY_UPSTREAM", raw)
        connect_timeout = self.duration("GATEWAY_UPSTREAM_CONNECT_TIMEOUT", 5)
        read_timeout = self.duration("GATEWAY_UPSTREAM_TIMEOUT", 60)
        pass_host_header = self.boolean("GATEWAY_PASS_HOST_HEADER", True)
        pass_authorization = self.boolean("GATEWAY_PASS_AUTHORIZATION", False)
        strip = tuple(sorted(self.listed("GATEWAY_STRIP_HEADERS")))
        bad = [name for name in strip if not re.fullmatch(r"[!#$%&'+.^_`|~0-9A-Za-z-]+\*?", name)]
        if bad:
            self.problems.append(f"GATEWAY_STRIP_HEADERS: {', '.join(map(repr, bad))} are not header names")
        if url is None and not routes:
            return None
        return UpstreamSettings(
            url, connect_timeout, read_timeout, pass_host_header, pass_authorization, strip, routes=routes
        )

    def identity_headers(self) -> IdentityHeaderSettings:
        families = self.listed("GATEWAY_IDENTITY_HEADERS") or IdentityHeaderSettings.families
        families = frozenset(family.lower() for family in families)
        unknown = sorted(families - set(IDENTITY_HEADER_FAMILIES))
        if unknown:
            self.problems.append(
                f"GATEWAY_IDENTITY_HEADERS: {', '.join(map(repr, unknown))} not known; "
                f"choose from {', '.join(IDENTITY_HEADER_FAMILIES)}"
            )
        signed = self.boolean("GATEWAY_SIGNED_HEADER", True)
        if self.raw("GATEWAY_SIGNED_HEADER") is not None and signed and "alb" not in families:
            self.problems.append("GATEWAY_SIGNED_HEADER: x-amzn-oidc-data is sent with the alb family only")
        arn = self.raw("GATEWAY_SIGNER_ARN") or DEFAULT_SIGNER_ARN
        if not _ALB_ARN.match(arn):
            self.problems.append(
                f"GATEWAY_SIGNER_ARN: {arn!r} is not an ALB ARN like "
                "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/my-app/50dc6c495c0c9188"
            )
        key = self.raw("GATEWAY_SIGNING_KEY")
        if key is not None:
            try:
                load_private_keys(key)
            except ValueError as exc:
                # SECURITY: the message says what is wrong with the key, never what it is.
                self.problems.append(f"GATEWAY_SIGNING_KEY: {exc}")
        return IdentityHeaderSettings(
            families=families,
            signed=signed,
            signer_arn=arn,
            signing_key=Secret(key) if key is not None else None,
            pass_access_token=self.boolean("GATEWAY_PASS_ACCESS_TOKEN", False),
        )

    def listen(self) -> tuple[str, int]:
        raw = self.raw("GATEWAY_LISTEN") or "0.0.0.0:8000"
        host, sep, port_text = raw.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
            self.problems.append(f"GATEWAY_LISTEN: {raw!r} must be host:port, e.g. 0.0.0.0:8000")
            return "0.0.0.0", 8000
        return host, int(port_text)

    def server(self) -> ServerSettings:
        def count(name: str, default: int, minimum: int) -> int:
            value = self.typed(name, default, int, "a whole number")
            if value < minimum:
                self.problems.append(f"{name}: must be at least {minimum}")
                return default
            return value

        max_body = self.raw("GATEWAY_MAX_BODY_SIZE")
        max_body_size = None
        if max_body is not None and max_body.lower() not in ("off", "none", "0"):
            max_body_size = self.typed("GATEWAY_MAX_BODY_SIZE", None, parse_size, "a size such as 100MB or off")
        return ServerSettings(
            header_timeout=self.duration("GATEWAY_HEADER_TIMEOUT", 20, minimum=0.1),
            keepalive_timeout=self.duration("GATEWAY_KEEPALIVE_TIMEOUT", 75, minimum=1),
            # Each connection costs a file descriptor and a few KiB; 10k per process stays well inside the usual
            # 65536 file limit of a container (the soak test holds 1,000 on one worker).
            max_connections=count("GATEWAY_MAX_CONNECTIONS", 10_000, 1),
            max_body_size=max_body_size,
            workers=count("GATEWAY_WORKERS", usable_cpus(), 1),
            shutdown_timeout=self.duration("GATEWAY_SHUTDOWN_TIMEOUT", 30, minimum=0),
            event_loop=self._event_loop(),
        )

    def _event_loop(self) -> str:
        loop = (self.raw("GATEWAY_EVENT_LOOP") or "uvloop").lower()
        if loop not in ("uvloop", "asyncio"):
            self.problems.append(f"GATEWAY_EVENT_LOOP: {loop!r} is not uvloop or asyncio")
            return "uvloop"
        return loop

    def tls(self, public_url: URL | None, listen_port: int) -> TlsSettings:
        cert, key = self.raw("GATEWAY_TLS_CERT_FILE"), self.raw("GATEWAY_TLS_KEY_FILE")
        if cert is not None and key is None:
            self.problems.append("GATEWAY_TLS_KEY_FILE: required when GATEWAY_TLS_CERT_FILE is set (https needs both)")
        elif key is not None and cert is None:
            self.problems.append("GATEWAY_TLS_CERT_FILE: required when GATEWAY_TLS_KEY_FILE is set (https needs both)")
        elif cert is not None and key is not None:
            # The same code that builds the server's context checks the files, so what passes here can be served.
            self.problems.extend(pem_problems("GATEWAY_TLS_CERT_FILE", Path(cert), "GATEWAY_TLS_KEY_FILE", Path(key)))
            if public_url is not None and public_url.scheme != "https":
                self.problems.append("GATEWAY_PUBLIC_URL: must be https when the gateway serves TLS itself")
        redirect = self.raw("GATEWAY_HTTP_REDIRECT_LISTEN")
        redirect_listen = parse_host_port(redirect) if redirect is not None else None
        if redirect is not None and redirect_listen is None:
            self.problems.append(f"GATEWAY_HTTP_REDIRECT_LISTEN: {redirect!r} must be host:port, e.g. 0.0.0.0:8080")
        elif redirect_listen is not None and cert is None:
            self.problems.append("GATEWAY_HTTP_REDIRECT_LISTEN: redirects to https, so it needs GATEWAY_TLS_CERT_FILE")
        elif redirect_listen is not None and redirect_listen[1] == listen_port != 0:
            self.problems.append(f"GATEWAY_HTTP_REDIRECT_LISTEN: port {listen_port} is GATEWAY_LISTEN's")
        ca = self.raw("GATEWAY_UPSTREAM_CA_FILE")
        if ca is not None:
            try:
                ssl.create_default_context(cafile=ca)
            except ssl.SSLError as exc:
                self.problems.append(f"GATEWAY_UPSTREAM_CA_FILE: {ca!r} holds no PEM CA certificate ({exc.reason})")
            except OSError as exc:
                self.problems.append(f"GATEWAY_UPSTREAM_CA_FILE: {ca!r} cannot be read ({exc.strerror})")
        return TlsSettings(
            cert_file=Path(cert) if cert is not None else None,
            key_file=Path(key) if key is not None else None,
            redirect_listen=redirect_listen,
            upstream_ca_file=Path(ca) if ca is not None else None,
        )

    def observability(self, listen_port: int, redirect: tuple[str, int] | None) -> ObservabilitySettings:
        raw = self.raw("GATEWAY_METRICS_LISTEN")
        if raw is not None and raw.lower() == "off":
            raw = None
        metrics_listen = parse_host_port(raw) if raw is not None else None
        if raw is not None and (metrics_listen is None or metrics_listen[1] == 0):
            self.problems.append(f"GATEWAY_METRICS_LISTEN: {raw!r} must be host:port, e.g. 127.0.0.1:9090")
            metrics_listen = None
        # SECURITY: metrics describe the traffic (who is refused, how often) and name the upstreams: never on a
        # port the public reaches.
        public_ports = {listen_port, *([redirect[1]] if redirect else [])} - {0}
        if metrics_listen is not None and metrics_listen[1] in public_ports:
            self.problems.append(
                f"GATEWAY_METRICS_LISTEN: port {metrics_listen[1]} is a public port (GATEWAY_LISTEN or "
                "GATEWAY_HTTP_REDIRECT_LISTEN); metrics need a port of their own, e.g. 127.0.0.1:9090"
            )
        log_format = (self.raw("GATEWAY_LOG_FORMAT") or "text").lower()
        if log_format not in ("text", "json"):
            self.problems.append(f"GATEWAY_LOG_FORMAT: {log_format!r} is not text or json")
        return ObservabilitySettings(
            metrics_listen=metrics_listen,
            log_format=log_format,
            access_log=self.boolean("GATEWAY_ACCESS_LOG", True),
        )

    def streams(self) -> StreamSettings:
        def bound(name: str, default: float) -> float | None:  # a duration, or off (also 0 or none): no bound
            off = (self.raw(name) or "").lower() in ("off", "none", "0", "0s")
            return None if off else self.duration(name, default, minimum=0.1)

        origins, bad = set(), []
        for entry in sorted(self.listed("GATEWAY_WEBSOCKET_ORIGINS")):
            origin = serialized_origin(entry)
            if origin is None:
                bad.append(entry)
            else:
                origins.add(origin)
        if bad:
            self.problems.append(
                f"GATEWAY_WEBSOCKET_ORIGINS: {', '.join(map(repr, bad))} are not origins like https://app.example.com"
            )
        return StreamSettings(
            proxy_websockets=self.boolean("GATEWAY_PROXY_WEBSOCKETS", True),
            websocket_origins=frozenset(origins),
            websocket_heartbeat=bound("GATEWAY_WEBSOCKET_HEARTBEAT", 30.0),
            idle_timeout=bound("GATEWAY_STREAM_IDLE_TIMEOUT", 3600.0),
        )
