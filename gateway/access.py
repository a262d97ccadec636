"""Access rules: which identity may use which path. Pure: no I/O, no request objects.

Grammar (GATEWAY_RULES, ``;``-separated ``PATH=POLICY``; GATEWAY_PUBLIC_PATHS, comma-separated paths):
- PATH ending in ``/`` is a prefix (and also matches itself without the slash: ``/admin/`` covers ``/admin``);
  any other PATH is one exact path. The longest matching entry wins; an exact entry beats a prefix of equal length.
- POLICY: ``public`` | ``authenticated`` | ``deny`` | ``group:NAME[|NAME…]`` | ``email-domain:DOMAIN[|DOMAIN…]`` |
  ``scope:SCOPE[|SCOPE…]``.
- A path no entry matches gets the global policy: signed in, and (when set) in GATEWAY_ALLOWED_GROUPS and with a
  verified e-mail in GATEWAY_ALLOWED_EMAIL_DOMAINS. A per-path entry replaces the global policy on its paths.

The rule is decided on every reading of the path an upstream might route on (``request_target``); readings that
fall under different entries make the request ambiguous, and it is refused rather than guessed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from .errors import BadRequest, Forbidden, InsufficientScope, NeedsSignIn
from .identity import Identity
from .request_target import readings

KINDS = ("public", "authenticated", "deny", "group", "email-domain", "scope")
_WITH_VALUES = ("group", "email-domain", "scope")


@dataclasses.dataclass(frozen=True)
class Policy:
    kind: str
    groups: frozenset[str] = frozenset()
    email_domains: frozenset[str] = frozenset()
    scopes: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, text: str) -> Policy:
        """``public``, ``group:admins|ops``, …; raises ValueError with the reason."""
        kind, sep, values = text.strip().partition(":")
        kind = kind.strip().lower()
        if kind not in KINDS:
            raise ValueError(f"unknown policy {kind!r} (one of {', '.join(KINDS)})")
        names = frozenset(v.strip() for v in values.split("|") if v.strip())
        if (kind in _WITH_VALUES) != bool(names) or (kind not in _WITH_VALUES and sep):
            raise ValueError(f"{kind} takes {'one or more' if kind in _WITH_VALUES else 'no'} values")
        if kind == "group":
            return cls(kind, groups=names)
        if kind == "email-domain":
            return cls(kind, email_domains=frozenset(n.lower() for n in names))
        return cls(kind, scopes=names) if kind == "scope" else cls(kind)

    @property
    def needs_identity(self) -> bool:
        return self.kind not in ("public", "deny")

    def check(self, identity: Identity | None) -> None:
        """Return when ``identity`` may pass; raise the outcome that says why not."""
        if self.kind == "public":
            return
        if self.kind == "deny":
            raise Forbidden("This path is closed.")
        if identity is None:
            raise NeedsSignIn()
        if self.scopes and not self.scopes & identity.scopes:
            raise InsufficientScope(self.scopes)
        if self.groups and not self.groups.intersection(identity.groups):
            raise Forbidden("You are signed in, but not in a group this page is open to.")
        if self.email_domains and identity.email_domain not in self.email_domains:
            raise Forbidden("You are signed in, but your e-mail domain is not allowed here.")


@dataclasses.dataclass(frozen=True)
class Rule:
    path: str
    policy: Policy

    @property
    def prefix(self) -> bool:
        return self.path.endswith("/")

    def matches(self, path: str) -> bool:
        if not self.prefix:
            return path == self.path
        return path.startswith(self.path) or path == self.path[:-1]

    @property
    def weight(self) -> tuple[int, bool]:
        return len(self.path.rstrip("/")), not self.prefix


def parse_rules(text: str) -> tuple[Rule, ...]:
    """GATEWAY_RULES; raises ValueError naming the bad entry."""
    rules = []
    for entry in (e.strip() for e in text.split(";")):
        if not entry:
            continue
        path, sep, policy = entry.partition("=")
        path = path.strip()
        if not sep or not path.startswith("/"):
            raise ValueError(f"{entry!r} is not PATH=POLICY with PATH starting with /")
        try:
            rules.append(Rule(path, Policy.parse(policy)))
        except ValueError as exc:
            raise ValueError(f"{entry!r}: {exc}") from None
    return tuple(rules)


def parse_paths(text: str) -> tuple[str, ...]:
    paths = tuple(p.strip() for p in text.split(",") if p.strip())
    bad = [p for p in paths if not p.startswith("/")]
    if bad:
        raise ValueError(f"{', '.join(map(repr, bad))} must start with /")
    return paths


class AccessRules:
    """The rule table, compiled once at startup; ``policy_for`` runs on every request."""

    def __init__(self, rules: Iterable[Rule], *, default: Policy) -> None:
        # Later entries override earlier ones for the same path (GATEWAY_RULES after GATEWAY_PUBLIC_PATHS).
        by_path = {rule.path: rule for rule in rules}
        self._rules = sorted(by_path.values(), key=lambda r: r.weight, reverse=True)
        self._folded = sorted(
            (dataclasses.replace(r, path=r.path.lower()) for r in by_path.values()),
            key=lambda r: r.weight,
            reverse=True,
        )
        self.default = default

    @classmethod
    def build(
        cls,
        *,
        public_paths: Iterable[str] = (),
        rules: Iterable[Rule] = (),
        allowed_groups: frozenset[str] = frozenset(),
        allowed_email_domains: frozenset[str] = frozenset(),
    ) -> AccessRules:
        default = Policy("authenticated", groups=allowed_groups, email_domains=allowed_email_domains)
        public = [Rule(path, Policy("public")) for path in public_paths]
        return cls([*public, *rules], default=default)

    def _match(self, path: str, table: list[Rule]) -> Rule | None:
        return next((rule for rule in table if rule.matches(path)), None)

    def policy_for(self, raw_path: str) -> Policy:
        """The policy of the one rule every reading of ``raw_path`` falls under; BadRequest when they differ."""
        paths, fold_case = readings(raw_path)
        matched = {self._match(path, self._rules) for path in paths}
        if fold_case:
            matched |= {self._match(path.lower(), self._folded) for path in paths}
        policies = {rule.policy if rule is not None else self.default for rule in matched}
        if len(policies) > 1:
            # SECURITY: the upstream might route this target under another rule than the one we would check.
            raise BadRequest("The request path is ambiguous; use its plain form.", code="ambiguous_path")
        return policies.pop()
