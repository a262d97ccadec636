"""Header hygiene for proxied requests and responses: no I/O, and the rules computed once (``HeaderPolicy``).

Inbound, these never reach the upstream as the client sent them: hop-by-hop headers (and those named in
``Connection``), anything that is or normalises to an identity or forwarding header of any well-known auth proxy
(plus GATEWAY_STRIP_HEADERS), the client's own ``Authorization`` (unless it is the Bearer token the gateway
verified, or GATEWAY_PASS_AUTHORIZATION), and the gateway's own cookies. Then the gateway adds the identity it
verified, in the header families GATEWAY_IDENTITY_HEADERS names (every family is stripped from clients whether it
is sent or not), built once per identity and kept ready (with its signed ``x-amzn-oidc-data``) until the signed
header nears its expiry. Outbound, a ``Set-Cookie`` for one of the gateway's cookies is dropped. Header names are compared after lower-casing
and mapping ``_`` and ``.`` to ``-``, because many servers (gunicorn, PHP, Rails via CGI) fold ``X_Forwarded_User``
into the same variable as ``X-Forwarded-User``.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Iterable
from urllib.parse import quote

from cachetools import LRUCache
from multidict import CIMultiDict, CIMultiDictProxy

from .identity import Identity
from .session_cookies import cookie_pairs
from .signed_identity import RENEW_BEFORE, IdentitySigner

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# The identity headers the gateway sets, by family (GATEWAY_IDENTITY_HEADERS; README "Identity headers" says which
# apps read which). oauth2-proxy's names:
USER, EMAIL, GROUPS, PREFERRED_USERNAME = (
    "X-Forwarded-User",
    "X-Forwarded-Email",
    "X-Forwarded-Groups",
    "X-Forwarded-Preferred-Username",
)
ACCESS_TOKEN = "X-Forwarded-Access-Token"  # noqa: S105 (a header name) with GATEWAY_PASS_ACCESS_TOKEN
CLIENT_ID, SCOPES = "X-Forwarded-Client-Id", "X-Forwarded-Scopes"  # for Bearer-token requests
# AWS ALB's (x-amzn-oidc-data is signed: signed_identity):
AMZN_IDENTITY, AMZN_DATA, AMZN_ACCESS_TOKEN = "X-Amzn-Oidc-Identity", "X-Amzn-Oidc-Data", "X-Amzn-Oidc-Accesstoken"
# Which claim goes into which header, per family; a claim the identity lacks is not sent.
_FAMILY_HEADERS = {
    "oauth2-proxy": (("user", USER), ("email", EMAIL), ("groups", GROUPS), ("preferred", PREFERRED_USERNAME)),
    "alb": (("sub", AMZN_IDENTITY),),
    # Authelia's and Authentik's names, which many apps read.
    "remote": (
        ("user", "Remote-User"),
        ("groups", "Remote-Groups"),
        ("email", "Remote-Email"),
        ("name", "Remote-Name"),
    ),
    # Grafana's auth proxy: header_name and the headers = Email:… Name:… Groups:… of its documentation.
    "grafana": (
        ("user", "X-WEBAUTH-USER"),
        ("email", "X-WEBAUTH-EMAIL"),
        ("name", "X-WEBAUTH-NAME"),
        ("groups", "X-WEBAUTH-GROUPS"),
    ),
}
FAMILIES = tuple(_FAMILY_HEADERS)
DEFAULT_FAMILIES = frozenset({"oauth2-proxy", "alb"})
_CACHE_SIZE = 4096  # identities whose headers (and signed header) are kept ready; a few MB at most
# SECURITY: names (normalised) and prefixes a client must never be able to send upstream: the identity headers of
# every auth proxy an upstream might have been written for, and forwarding headers that could spoof the client's
# origin. Who reads which (README, "Headers the upstream receives"):
_STRIPPED_PREFIXES = (
    "x-forwarded-",  # oauth2-proxy, Traefik forward-auth, Nextcloud, Rundeck (X-Forwarded-Roles)
    "x-amzn-oidc-",  # AWS ALB authenticate-cognito/-oidc
    "x-auth-request-",  # oauth2-proxy's auth_request mode
    "x-original-",  # nginx auth_request (X-Original-URL / -Method)
    "x-pomerium-",  # Pomerium (x-pomerium-jwt-assertion, x-pomerium-claim-*)
    "oidc-",  # mod_auth_openidc (OIDC_CLAIM_*, OIDC_access_token)
    "x-webauth-",  # Grafana auth proxy (X-WEBAUTH-USER, -EMAIL, -NAME, -ROLE, -GROUPS), Gitea/Forgejo
    "remote-",  # Authelia / Authentik headers read by many apps (Remote-User, -Groups, -Email, -Name)
    "x-remote-",  # Kubernetes authenticating proxy (X-Remote-User, -Group, -Extra-*), JupyterHub remote-user
    "x-authentik-",  # Authentik proxy outpost
    "x-vouch-",  # Vouch Proxy
    "cf-access-",  # Cloudflare Access
    "x-goog-authenticated-",  # Google IAP
    "x-goog-iap-",
    "x-ms-client-principal",  # Azure App Service authentication
    "x-ms-token-",
    "tailscale-user-",  # Tailscale serve
    "x-ssl-client-",  # client-certificate identity set by TLS terminators
    "ssl-client-",
)
_STRIPPED_NAMES = frozenset(
    {
        "forwarded",
        "x-real-ip",
        "x-client-ip",
        "gap-auth",  # oauth2-proxy's signed identity
        "gap-signature",
        "x-user",
        "x-email",
        "x-groups",
        "x-username",
        "x-user-email",
        "x-auth-user",
        "x-auth-email",
        "x-auth-username",
        "x-auth-groups",
        "x-proxy-remote-user",  # Superset / Flask-AppBuilder behind ProxyFix
        "authuser",
        "x-client-cert",
        "x-client-verify",
        "expect",
    }
)
_VALUE_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")
_LIST_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in "%,")

log = logging.getLogger("gateway.headers")


@functools.lru_cache(maxsize=1024)  # header names repeat on every request; bounded, as clients choose them
def normalise(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _connection_listed(headers: CIMultiDictProxy[str]) -> set[str]:
    listed: set[str] = set()
    for value in headers.getall("Connection", []):
        listed.update(normalise(token.strip()) for token in value.split(",") if token.strip())
    return listed


def header_value(value: str, *, in_list: bool = False) -> str:
    """A claim as an ASCII header value that every reader decodes back to exactly the claim.

    Controls, CR/LF, non-ASCII and ``%`` are percent-encoded; so are spaces at either end (an HTTP parser trims
    them); in a list (X-Forwarded-Groups) commas and every space are encoded too, so a splitter that strips
    whitespace cannot turn ``' admins'`` into ``admins``.
    """
    # SECURITY: a claim with CR/LF must not split the header (injection); a lone surrogate must not crash.
    encoded = quote(value, safe=_LIST_SAFE if in_list else _VALUE_SAFE, errors="replace")
    core = encoded.strip(" ")
    if core == encoded:
        return encoded
    lead = len(encoded) - len(encoded.lstrip(" "))
    return "%20" * lead + core + "%20" * (len(encoded) - len(core) - lead)


def claim_values(identity: Identity) -> dict[str, str]:
    """A person's claims as header values, encoded once for every family."""
    assert identity.username is not None
    values = {"user": header_value(identity.username), "sub": header_value(identity.sub)}
    if identity.email and identity.email_verified:
        values["email"] = header_value(identity.email)
    if identity.groups:
        # Each group is encoded so the list splits back into exactly the user's groups.
        values["groups"] = ",".join(header_value(g, in_list=True) for g in identity.groups)
    if identity.preferred_username:
        values["preferred"] = header_value(identity.preferred_username)
    if identity.display_name:
        values["name"] = header_value(identity.display_name)
    return values


def identity_headers(
    identity: Identity,
    families: frozenset[str] = DEFAULT_FAMILIES,
    *,
    signed: str | None = None,
    access_token: bool = False,
) -> list[tuple[str, str]]:
    """The headers of ``families`` for ``identity``; ``signed`` is its x-amzn-oidc-data, ``access_token`` whether
    its access token goes along (X-Forwarded-Access-Token, x-amzn-oidc-accesstoken)."""
    headers = []
    if identity.via == "bearer" and "oauth2-proxy" in families:
        headers.append((CLIENT_ID, header_value(identity.client_id or "")))
        headers.append((SCOPES, " ".join(header_value(s, in_list=True) for s in sorted(identity.scopes))))
    if identity.username is None:
        return headers  # SECURITY: a machine client is never presented as a user
    values = claim_values(identity)
    token = header_value(identity.access_token) if access_token and identity.access_token else None
    for family in FAMILIES:
        if family in families:
            headers += [(name, values[claim]) for claim, name in _FAMILY_HEADERS[family] if claim in values]
    if "alb" in families:
        headers += [(AMZN_DATA, signed)] if signed is not None else []
        headers += [(AMZN_ACCESS_TOKEN, token)] if token is not None else []
    if "oauth2-proxy" in families and token is not None:
        headers.append((ACCESS_TOKEN, token))
    return headers


class HeaderPolicy:
    """What crosses the gateway in each direction; built once from configuration, used on every request."""

    def __init__(
        self,
        *,
        cookie_names: Iterable[str],
        pass_host_header: bool = True,
        pass_authorization: bool = False,
        strip: Iterable[str] = (),
        families: frozenset[str] = DEFAULT_FAMILIES,
        signer: IdentitySigner | None = None,
        pass_access_token: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``signer``: signs x-amzn-oidc-data (None: not sent); ``pass_access_token``: GATEWAY_PASS_ACCESS_TOKEN."""
        self._families = families
        self._signer = signer if "alb" in families else None
        self._pass_access_token = pass_access_token
        self._clock = clock
        # identity (with its access token when that is sent) -> (when to build them again, its headers)
        self._ready: LRUCache[object, tuple[float, tuple[tuple[str, str], ...]]] = LRUCache(maxsize=_CACHE_SIZE)
        self._cookie_names = tuple(cookie_names)  # the session cookie's name (and its unprefixed form)
        self._pass_host = pass_host_header
        self._pass_authorization = pass_authorization
        extra = [normalise(name) for name in strip]
        self._prefixes = _STRIPPED_PREFIXES + tuple(n[:-1] for n in extra if n.endswith("*"))
        self._names = _STRIPPED_NAMES | {n for n in extra if not n.endswith("*")}
        self._cookie_keys = tuple(normalise(name) for name in self._cookie_names)
        self._cookie_prefixes = tuple(f"{name}_" for name in self._cookie_names)

    def identity_headers(self, identity: Identity) -> tuple[tuple[str, str], ...]:
        """The identity's headers, built (and x-amzn-oidc-data signed) once per identity and reused until the signed
        header nears its expiry: on the hot path this is one cache lookup."""
        key = (identity, identity.access_token) if self._pass_access_token else identity
        now = self._clock()
        ready = self._ready.get(key)
        if ready is not None and now < ready[0]:
            return ready[1]
        signed, renew_at = None, math.inf
        if self._signer is not None and identity.username is not None:
            signed, exp = self._signer.sign(identity, now=now)
            renew_at = exp - RENEW_BEFORE
        headers = identity_headers(identity, self._families, signed=signed, access_token=self._pass_access_token)
        built = tuple(headers)
        self._ready[key] = (renew_at, built)
        return built

    def is_gateway_cookie(self, name: str) -> bool:
        # The same test as session_cookies.is_gateway_cookie, for every prefix at once.
        return name in self._cookie_names or name.startswith(self._cookie_prefixes)

    def _dropped(self, key: str, identity: Identity | None) -> bool:
        """``key`` is a normalised name of a client header."""
        if key.startswith(self._prefixes) or key in self._names or key.startswith(self._cookie_keys):
            return True
        if key == "authorization":
            # SECURITY: a client's own credentials must not give the upstream a second identity (Basic, its own
            # tokens); only the Bearer token the gateway verified goes on, or any with GATEWAY_PASS_AUTHORIZATION.
            return not (self._pass_authorization or (identity is not None and identity.via == "bearer"))
        return key == "host" and not self._pass_host

    def upstream(self, incoming: CIMultiDictProxy[str], identity: Identity | None) -> CIMultiDict[str]:
        """The client's headers as the upstream may see them, then the identity's headers."""
        dropped = HOP_BY_HOP | _connection_listed(incoming)
        outgoing: CIMultiDict[str] = CIMultiDict()
        for name, value in incoming.items():
            key = normalise(name)
            if key not in dropped and key != "cookie" and not self._dropped(key, identity):
                outgoing.add(name, value)
        kept = [pair for name, pair in cookie_pairs(incoming.getall("Cookie", [])) if not self.is_gateway_cookie(name)]
        if kept:
            outgoing["Cookie"] = "; ".join(kept)
        if identity is not None:
            outgoing.extend(self.identity_headers(identity))
        return outgoing

    def downstream(self, upstream: CIMultiDictProxy[str]) -> CIMultiDict[str]:
        """The upstream's response headers minus hop-by-hop ones and any Set-Cookie for the gateway's cookies."""
        dropped = HOP_BY_HOP | _connection_listed(upstream)
        outgoing: CIMultiDict[str] = CIMultiDict()
        for name, value in upstream.items():
            key = normalise(name)
            if key in dropped:
                continue
            if key == "set-cookie" and self.is_gateway_cookie(value.split("=", 1)[0].strip()):
                # SECURITY: the upstream must not set (or clear) the gateway's session or login cookies.
                log.warning(
                    "dropped the upstream's Set-Cookie for the gateway's cookie %r", value.split("=", 1)[0][:64]
                )
                continue
            outgoing.add(name, value)
        return outgoing
