"""Web origins (``scheme://host[:port]``) compared the way browsers serialise them, for the WebSocket Origin check.

A browser sends ``Origin`` on every WebSocket handshake, and a page on another site can open a WebSocket to the
gateway with the user's cookie attached (cookies follow the target, not the page; SameSite=Lax does not stop a
same-site sibling, and ``None`` stops nothing). The Origin is the only thing that tells the two apart, so it is
compared exactly: scheme and host lower-cased, the default port dropped, nothing else allowed in it.
"""

from __future__ import annotations

import re

from yarl import URL

# Scheme, then an authority without userinfo, path, query or fragment (one trailing "/" is tolerated in settings).
_ORIGIN = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/?#@\s\\]+/?")


def serialized_origin(value: str) -> str | None:
    """``value`` as a browser would serialise it (``https://app.example.com``), or None if it is no http(s) origin.

    ``null`` (sandboxed frames, file: pages), paths, userinfo and bad ports are all None: none of them can match.
    """
    text = value.strip()
    if not _ORIGIN.fullmatch(text):
        return None
    try:
        url = URL(text)
    except ValueError:  # a port out of range, a host yarl cannot encode
        return None
    if url.scheme not in ("http", "https") or not url.host:
        return None
    return str(url.origin())
