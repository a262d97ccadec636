"""The paths an upstream might route a request target to, so that an access rule is decided on all of them.

The gateway forwards the request target byte for byte, but upstreams differ in how they read it: most decode
percent-escapes, many resolve ``..``, merge ``//``, or drop ``;params`` (Tomcat, Spring), some decode ``%2F`` into a
separator or decode twice, and some compare paths without case (IIS, case-insensitive file systems). A rule checked
on one reading would let ``/public/../admin``, ``/public%2F..%2Fadmin``, ``//admin``, ``/Admin`` or ``/admin;x``
past it. So ``readings`` returns every such reading; the access rules are evaluated on each, and when they do not
all give the same rule the request is refused with 400 (``access.AccessRules.policy_for``). Targets no honest client
sends (a backslash, control characters, an encoded NUL) are refused outright.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from .errors import BadRequest

_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]|%(?:[01][0-9a-fA-F]|7[fF]|5[cC])")
# A target needs more than one reading only when it contains something an upstream may read another way.
_NEEDS_READINGS = re.compile(r"%|;|//|/\.|[A-Z]")


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 5.2.4, as servers that normalise paths apply it."""
    output: list[str] = []
    segments = path.split("/")
    for index, segment in enumerate(segments[1:], start=1):
        last = index == len(segments) - 1
        if segment == ".":
            if last:
                output.append("")
        elif segment == "..":
            if output:
                output.pop()
            if last:
                output.append("")
        else:
            output.append(segment)
    return "/" + "/".join(output)


def _decode_keeping_slashes(path: str) -> str:
    return "%2F".join(unquote(part, errors="replace") for part in re.split("%2[fF]", path))


_TRANSFORMS = (
    lambda p: unquote(p, errors="replace"),  # %2F read as a separator; applied again, a second decode
    _remove_dot_segments,
    lambda p: re.sub("/{2,}", "/", p),
    lambda p: re.sub(";[^/]*", "", p),
)


MAX_READINGS = 64


def readings(raw_path: str) -> tuple[frozenset[str], bool]:
    """Every path an upstream might route ``raw_path`` (no query) to, and whether one may ignore case."""
    # SECURITY: control characters, backslashes (a separator on Windows servers) and their escapes are refused,
    # never interpreted.
    if not raw_path.startswith("/") or _CONTROL.search(raw_path):
        raise BadRequest("The request path contains characters that are not allowed.", code="invalid_path")
    if not _NEEDS_READINGS.search(raw_path):
        return frozenset((raw_path,)), False
    found = {_decode_keeping_slashes(raw_path)}
    # Until nothing new appears: "/..;/" is ".." only once ";" is dropped, "%252e" is "." only after two decodes.
    while True:
        grown = found | {transform(path) for path in found for transform in _TRANSFORMS}
        if grown == found:
            break
        if len(grown) > MAX_READINGS:
            raise BadRequest("The request path is ambiguous.", code="ambiguous_path")
        found = grown
    if any(_CONTROL.search(path) for path in found):
        raise BadRequest("The request path contains characters that are not allowed.", code="invalid_path")
    return frozenset(found), True
