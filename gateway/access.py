"""Access rules: which identity may use which path. Pure: no I/O, no request objects.

Grammar (GATEWAY_RULES, ``;``-separated ``[HOST]PATH=POLICY``; GATEWAY_PUBLIC_PATHS, comma-separated paths):
- PATH ending in ``/`` is a prefix (and also matches itself without the slash: ``/admin/`` covers ``/admin``);
  any other PATH is one exact path. An entry with a HOST (``grafana.example.com/``) applies to that Host only and
  beats entries without one; then the longest path wins; an exact entry beats a prefix of equal length.
- POLICY: ``public`` | ``authenticated`` | ``deny`` | ``group:NAME[|NAME…]`` | ``email-domain:DOMAIN[|DOMAIN…]`` |
  ``scope:SCOPE[|SCOPE…]``.
- A path no entry matches gets the global policy: signed in, and (when set) in GATEWAY_ALLOWED_GROUPS and with a
  verified e-mail in GATEWAY_ALLOWED_EMAIL_DOMAINS. A per-path entry replaces the global policy on its paths.

The rule is decided on every reading of the path an upstream might route on (``path_table``); readings that fall
under different entries make the request ambiguous, and it is refused rather than guessed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from .errors import Forbidden, InsufficientScope, NeedsSignIn
from .identity import Identity
from .path_table import Entry, PathTable, split_target

KINDS = ("public", "authenticated", "deny", "group", "email-domain", "scope")
_WITH_VALUES = ("group", "email-domain", "scope")


def email_domains(values: Iterable[str]) -> frozenset[str]:
    """E-mail domains as compared: lower case, without a leading ``@``; ``*`` (oauth2-proxy's ``--email-domain=*``)
    means any, which is no domain check at all (the empty set)."""
    domains = frozenset(value.strip().lower().lstrip("@") for value in values if value.strip())
    return frozenset() if "*" in domains else domains


@dataclasses.dataclass(frozen=True)
class Policy:
    kind: str
    groups: frozenset[str] = frozenset()
    email_domains: frozenset[str] = frozenset()
    scopes: frozenset[str] = frozenset()
    emails: frozenset[str] = frozenset()  # verified addresses, lower case (forward auth's ?allowed_emails=)
    redirect: bool = True  # False: without an identity always a 401, never a redirect to sign in (an API endpoint)

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
            return cls(kind, email_domains=email_domains(names))
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
            raise NeedsSignIn(redirect=self.redirect)
        if self.scopes and not self.scopes & identity.scopes:
            raise InsufficientScope(self.scopes)
        if self.groups and not self.groups.intersection(identity.groups):
            raise Forbidden("You are signed in, but not in a group this page is open to.")
        if self.email_domains and identity.email_domain not in self.email_domains:
            raise Forbidden("You are signed in, but your e-mail domain is not allowed here.")
        # SECURITY: only a verified address counts, as for the domain check (anyone can type an address at sign-up).
        if self.emails and (identity.verified_email or "").lower() not in self.emails:
            raise Forbidden("You are signed in, but your e-mail address is not allowed here.")


def parse_rules(text: str) -> tuple[Entry[Policy], ...]:
    """GATEWAY_RULES; raises ValueError naming the bad entry."""
    rules = []
    for entry in (e.strip() for e in text.split(";")):
        if not entry:
            continue
        target, sep, policy = entry.partition("=")
        if not sep:
            raise ValueError(f"{entry!r} is not [HOST]PATH=POLICY")
        try:
            host, path = split_target(target)
            rules.append(Entry(path, Policy.parse(policy), host))
        except ValueError as exc:
            raise ValueError(f"{entry!r}: {exc}") from None
    return tuple(rules)


def parse_paths(text: str) -> tuple[str, ...]:
    paths = tuple(p.strip() for p in text.split(",") if p.strip())
    bad = [p for p in paths if not p.startswith("/")]
    if bad:
        raise ValueError(f"{', '.join(map(repr, bad))} must start with /")
    return paths


class AccessRules(PathTable[Policy]):
    """The rule table: GATEWAY_PUBLIC_PATHS, then GATEWAY_RULES, over the global policy."""

    @classmethod
    def build(
        cls,
        *,
        public_paths: Iterable[str] = (),
        rules: Iterable[Entry[Policy]] = (),
        allowed_groups: frozenset[str] = frozenset(),
        allowed_email_domains: frozenset[str] = frozenset(),
    ) -> AccessRules:
        default = Policy("authenticated", groups=allowed_groups, email_domains=allowed_email_domains)
        public = [Entry(path, Policy("public")) for path in public_paths]
        return cls([*public, *rules], default=default)

    def policy_for(self, raw_path: str, host: str | None = None) -> Policy:
        """The policy of the one rule every reading of ``raw_path`` (on ``host``) falls under."""
        return self.lookup(raw_path, host)
