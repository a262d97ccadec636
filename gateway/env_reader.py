"""Reading typed values from the environment, collecting every problem instead of stopping at the first.

``config`` builds its sections on ``EnvReader``; each method returns a default (and records a problem naming the
variable) when a value is bad, so that one run reports every bad variable at once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TypeVar

from yarl import URL

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)


def parse_size(raw: str) -> int:
    """``1048576``, ``512KB``, ``64KiB``, ``100MB``, ``1GiB``: bytes. KB/MB/GB are powers of 1024, like KiB/MiB/GiB."""
    match = _SIZE.match(raw)
    if not match:
        raise ValueError(f"{raw!r} is not a size such as 65536, 64KiB or 100MB")
    unit = (match.group(2) or "b").lower()[0]
    return int(match.group(1)) * 1024 ** "bkmgt".index(unit)


def parse_duration(raw: str) -> float:
    """``90``, ``90s``, ``15m``, ``12h``, ``7d`` or ``500ms`` to seconds."""
    match = _DURATION.match(raw)
    if not match:
        raise ValueError(raw)
    return float(match.group(1)) * _UNITS[match.group(2)]


class EnvReader:
    """Reads variables one by one, collecting problems instead of stopping at the first."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.env = environ
        self.problems: list[str] = []

    def raw(self, name: str) -> str | None:
        value = self.env.get(name)
        return value.strip() if value is not None and value.strip() != "" else None

    def required(self, name: str, hint: str) -> str | None:
        value = self.raw(name)
        if value is None:
            self.problems.append(f"{name}: required ({hint})")
        return value

    def typed(self, name: str, default: T, convert: Callable[[str], T], expected: str, *, secret: bool = False) -> T:
        value = self.raw(name)
        if value is None:
            return default
        try:
            return convert(value)
        except ValueError:
            shown = "" if secret else f" {value!r}"
            self.problems.append(f"{name}:{shown} is not {expected}")
            return default

    def parsed(self, name: str, parse: Callable[[str], T], default: T) -> T:
        """A structured value whose parser's ValueError says what is wrong (it never quotes a secret)."""
        value = self.raw(name)
        if value is None:
            return default
        try:
            return parse(value)
        except ValueError as exc:
            self.problems.append(f"{name}: {exc}")
            return default

    def boolean(self, name: str, default: bool) -> bool:
        def convert(value: str) -> bool:
            lowered = value.lower()
            if lowered not in _TRUE | _FALSE:
                raise ValueError(value)
            return lowered in _TRUE

        return self.typed(name, default, convert, "true or false")

    def duration(self, name: str, default: float, *, minimum: float = 0.001) -> float:
        value = self.typed(name, default, parse_duration, "a duration such as 30s, 15m, 12h or 7d")
        if value < minimum:
            self.problems.append(f"{name}: must be at least {minimum:g}s")
            return default
        return value

    def url(self, name: str, value: str | None, *, path_allowed: bool = True) -> URL | None:
        if value is None:
            return None
        url = URL(value)
        if url.scheme not in ("http", "https") or not url.host or url.query_string or url.fragment or url.user:
            self.problems.append(
                f"{name}: {value!r} must be an absolute http(s) URL without query, fragment or userinfo"
            )
            return None
        if not path_allowed and url.path not in ("", "/"):
            self.problems.append(f"{name}: {value!r} must not have a path")
            return None
        return url

    def listed(self, name: str) -> frozenset[str]:
        return frozenset(v.strip() for v in (self.raw(name) or "").split(",") if v.strip())
