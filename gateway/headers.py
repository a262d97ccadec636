"""Header hygiene for proxied requests and responses: pure functions, no I/O.

Inbound, three kinds of header never reach the upstream as the client sent them: hop-by-hop headers (and those named
in ``Connection``), anything that is or normalises to an identity or forwarding header the gateway sets, and the
gateway's own cookies. Then the gateway adds the identity it verified. Header names are compared after lower-casing
and mapping ``_`` and ``.`` to ``-``, because many servers (gunicorn, PHP, Rails via CGI) fold ``X_Forwarded_User``
into the same variable as ``X-Forwarded-User``.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import quote

from multidict import CIMultiDict, CIMultiDictProxy

from .identity import Identity
from .session_cookies import is_gateway_cookie

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
# Identity headers the gateway sets, in oauth2-proxy's and AWS ALB's names.
USER, EMAIL, GROUPS, PREFERRED_USERNAME = (
    "X-Forwarded-User",
    "X-Forwarded-Email",
    "X-Forwarded-Groups",
    "X-Forwarded-Preferred-Username",
)
AMZN_IDENTITY = "X-Amzn-Oidc-Identity"
CLIENT_ID, SCOPES = "X-Forwarded-Client-Id", "X-Forwarded-Scopes"  # for Bearer-token requests
# SECURITY: names (normalised) and prefixes a client must never be able to send upstream: identity headers of
# every scheme an upstream might have been written for, and forwarding headers that could spoof the client's origin.
_STRIPPED_PREFIXES = ("x-forwarded-", "x-amzn-oidc-", "x-auth-request-", "x-original-", "x-pomerium-", "oidc-claim-")
_STRIPPED_NAMES = frozenset(
    {
        "forwarded",
        "x-real-ip",
        "gap-auth",
        "gap-signature",
        "remote-user",
        "x-remote-user",
        "x-user",
        "x-email",
        "x-groups",
        "x-client-ip",
        "expect",
    }
)
_HEADER_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in "%,")


def normalise(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _connection_listed(headers: CIMultiDictProxy[str]) -> set[str]:
    listed: set[str] = set()
    for value in headers.getall("Connection", []):
        listed.update(normalise(token.strip()) for token in value.split(",") if token.strip())
    return listed


def _spoofable(key: str, cookie_key: str) -> bool:
    """``key`` and ``cookie_key`` are normalised names."""
    return key.startswith(_STRIPPED_PREFIXES) or key in _STRIPPED_NAMES or key.startswith(cookie_key)


def without_gateway_cookies(values: Iterable[str], cookie_prefix: str) -> str | None:
    """The ``Cookie`` header(s) minus the gateway's cookies, each other pair left byte for byte as it came."""
    kept = []
    for value in values:
        for pair in value.split(";"):
            name = pair.split("=", 1)[0].strip()
            if pair.strip() and not is_gateway_cookie(name, cookie_prefix):
                kept.append(pair.strip())
    return "; ".join(kept) or None


def header_value(value: str, *, encode_commas: bool = False) -> str:
    """Claims become ASCII header values: anything else (controls, CR/LF, non-ASCII, ``%``) is percent-encoded."""
    # SECURITY: a claim with CR/LF must not split the header (injection); quote() encodes it instead.
    return quote(value, safe=_HEADER_SAFE + " " + ("" if encode_commas else ","))


def identity_headers(identity: Identity) -> list[tuple[str, str]]:
    headers = []
    if identity.via == "bearer":
        headers.append((CLIENT_ID, header_value(identity.client_id or "")))
        headers.append((SCOPES, " ".join(header_value(s) for s in sorted(identity.scopes))))
    if identity.username is None:
        return headers  # SECURITY: a machine client is never presented as a user
    headers += [(USER, header_value(identity.username)), (AMZN_IDENTITY, header_value(identity.sub))]
    if identity.email and identity.email_verified:
        headers.append((EMAIL, header_value(identity.email)))
    if identity.groups:
        # A comma inside a group name is encoded, so the list splits back into exactly the user's groups.
        headers.append((GROUPS, ",".join(header_value(g, encode_commas=True) for g in identity.groups)))
    if identity.preferred_username:
        headers.append((PREFERRED_USERNAME, header_value(identity.preferred_username)))
    return headers


def upstream_request_headers(
    incoming: CIMultiDictProxy[str], *, cookie_prefix: str, pass_host_header: bool
) -> CIMultiDict[str]:
    """The client's headers as the upstream may see them, before identity and forwarding headers are added."""
    dropped = HOP_BY_HOP | _connection_listed(incoming)
    cookie_key = normalise(cookie_prefix)
    outgoing: CIMultiDict[str] = CIMultiDict()
    for name, value in incoming.items():
        key = normalise(name)
        if key in dropped or key == "cookie" or _spoofable(key, cookie_key):
            continue
        if key == "host" and not pass_host_header:
            continue
        outgoing.add(name, value)
    cookies = without_gateway_cookies(incoming.getall("Cookie", []), cookie_prefix)
    if cookies is not None:
        outgoing["Cookie"] = cookies
    return outgoing


def downstream_response_headers(upstream: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """The upstream's response headers minus hop-by-hop ones; Set-Cookie and Location pass untouched."""
    dropped = HOP_BY_HOP | _connection_listed(upstream)
    return CIMultiDict((name, value) for name, value in upstream.items() if normalise(name) not in dropped)
