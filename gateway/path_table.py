"""A table of ``[HOST]PATH`` entries, looked up on every reading of a request path an upstream might route on.

Both the access rules (``access``) and the upstream routes (``upstreams``) are such tables: an entry ending in
``/`` is a prefix (and also matches the path without its slash: ``/admin/`` covers ``/admin``), any other is one
exact path; an entry may name a host (``grafana.example.com/``), which beats any entry without one; then the
longest path wins, and an exact entry beats a prefix of equal length. The lookup is made for every reading of the
path (``request_target.readings``): when the readings fall under entries with different values, the request is
ambiguous and refused with 400 rather than guessed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

from cachetools import LRUCache

from .errors import BadRequest
from .request_target import readings

V = TypeVar("V", bound=Hashable)

DECISIONS_KEPT = 4096  # (path, host) pairs whose outcome is remembered: a site's paths, bounded against floods
_AMBIGUOUS, _UNDECIDED = object(), object()


@dataclasses.dataclass(frozen=True)
class Entry(Generic[V]):
    path: str
    value: V
    host: str | None = None  # lower-case, without port

    @property
    def prefix(self) -> bool:
        return self.path.endswith("/")

    def matches(self, path: str, host: str | None) -> bool:
        if self.host is not None and self.host != host:
            return False
        if not self.prefix:
            return path == self.path
        return path.startswith(self.path) or path == self.path[:-1]

    @property
    def weight(self) -> tuple[bool, int, bool]:
        return self.host is not None, len(self.path.rstrip("/")), not self.prefix


def split_target(text: str) -> tuple[str | None, str]:
    """``host.example/path`` → (``host.example``, ``/path``); ``/path`` → (None, ``/path``); ValueError otherwise."""
    text = text.strip()
    if text.startswith("/"):
        return None, text
    host, slash, path = text.partition("/")
    if not slash or not host or ":" in host or any(c.isspace() for c in host):
        raise ValueError(f"{text!r} is not PATH or HOST/PATH (PATH starts with /)")
    return host.lower(), "/" + path


class PathTable(Generic[V]):
    """Compiled once at startup; ``lookup`` runs on every request."""

    def __init__(self, entries: Iterable[Entry[V]], *, default: V) -> None:
        # Later entries override earlier ones for the same host and path.
        unique = {(entry.host, entry.path): entry for entry in entries}.values()
        self._entries = sorted(unique, key=lambda e: e.weight, reverse=True)
        self._folded = [dataclasses.replace(e, path=e.path.lower()) for e in self._entries]
        self.default = default
        self.has_hosts = any(entry.host is not None for entry in self._entries)
        # The table never changes, so a path's outcome never does: computing the readings once per path, not per
        # request, takes the lookup off the hot path. Bounded (LRU), since the keys are whatever clients send.
        self._decided: LRUCache[tuple[str, str | None], object] = LRUCache(maxsize=DECISIONS_KEPT)

    @property
    def entries(self) -> tuple[Entry[V], ...]:
        return tuple(self._entries)

    def _match(self, path: str, host: str | None, table: list[Entry[V]]) -> V:
        entry = next((entry for entry in table if entry.matches(path, host)), None)
        return entry.value if entry is not None else self.default

    def lookup(self, raw_path: str, host: str | None = None) -> V:
        """The value every reading of ``raw_path`` falls under; BadRequest when they disagree."""
        key = (raw_path, host)
        decided = self._decided.get(key, _UNDECIDED)
        if decided is _UNDECIDED:
            decided = self._decided[key] = self._decide(raw_path, host)
        if decided is _AMBIGUOUS:
            # SECURITY: the upstream might route this target under another entry than the one we would check.
            raise BadRequest("The request path is ambiguous; use its plain form.", code="ambiguous_path")
        return decided  # type: ignore[return-value]

    def _decide(self, raw_path: str, host: str | None) -> object:
        paths, fold_case = readings(raw_path)
        found = {self._match(path, host, self._entries) for path in paths}
        if fold_case:
            found |= {self._match(path.lower(), host, self._folded) for path in paths}
        return _AMBIGUOUS if len(found) > 1 else found.pop()


def request_host(host_header: str | None) -> str | None:
    """The Host header's host, lower-case, without the port (``[::1]:80`` → ``[::1]``)."""
    if not host_header:
        return None
    host = host_header.lower()
    if host.startswith("["):
        return host.partition("]")[0] + "]"
    return host.partition(":")[0]
