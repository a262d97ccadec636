"""Validation of return-to targets (``rd``, the URL kept across sign-in, the sign-out target).

Only same-origin relative paths pass. Each rule is checked on the value and on every percent-decoded form of it,
because browsers and upstream apps may decode again: ``/%2F%2Fevil.example`` is ``//evil.example`` one decode away.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

MAX_LENGTH = 2048
_MAX_DECODES = 4
# A backslash, a C0 control character or DEL anywhere (one regex scan instead of a Python loop per character).
_UNSAFE_CHARACTER = re.compile(r"[\x00-\x1f\x7f\\]")


def _is_safe_form(candidate: str) -> bool:
    # SECURITY: "//host" and "/\host" are protocol-relative in browsers (open redirect); a scheme ("https:", "javascript:")
    # never starts with "/"; control characters (tab, CR, LF) are removed by browsers, so "/\t/host" becomes "//host".
    if not candidate.startswith("/") or candidate.startswith(("//", "/\\")):
        return False
    return _UNSAFE_CHARACTER.search(candidate) is None


def safe_redirect_path(target: str | None) -> str | None:
    """``target`` when it is a safe same-origin path (query allowed), otherwise ``None``. Pure: callers log."""
    if not target or len(target) > MAX_LENGTH:
        return None
    candidate = target
    for _ in range(_MAX_DECODES):
        if not _is_safe_form(candidate):
            return None
        decoded = unquote(candidate, errors="replace") if "%" in candidate else candidate
        if decoded == candidate:
            return target
        candidate = decoded
    return None  # encoded more times than any honest link is
