"""gateway.access: the rule grammar, each policy's check, which rule a path falls under, and the spellings of a
path that must never reach a protected page under a public rule."""

from __future__ import annotations

import pytest

from gateway.access import AccessRules, Policy, email_domains, parse_paths, parse_rules
from gateway.errors import BadRequest, Forbidden, InsufficientScope, NeedsSignIn
from gateway.path_table import Entry as Rule

from .factories import identity


# The grammar -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("public", Policy("public")),
        ("authenticated", Policy("authenticated")),
        ("deny", Policy("deny")),
        (" Deny ", Policy("deny")),
        ("group:admins|ops", Policy("group", groups=frozenset({"admins", "ops"}))),
        ("group: admins | ops |", Policy("group", groups=frozenset({"admins", "ops"}))),
        ("email-domain:Example.COM|b.org", Policy("email-domain", email_domains=frozenset({"example.com", "b.org"}))),
        ("scope:reports/read", Policy("scope", scopes=frozenset({"reports/read"}))),
    ],
)
def test_policy_grammar(text: str, expected: Policy) -> None:
    assert Policy.parse(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("admins", "unknown policy 'admins'"),
        ("", "unknown policy ''"),
        ("group", "group takes one or more values"),
        ("group:", "group takes one or more values"),
        ("group:|", "group takes one or more values"),
        ("email-domain:", "email-domain takes one or more values"),
        ("scope:", "scope takes one or more values"),
        ("public:x", "public takes no values"),
        ("authenticated:", "authenticated takes no values"),
        ("deny:everyone", "deny takes no values"),
    ],
)
def test_policy_grammar_errors_say_why(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        Policy.parse(text)


def test_rules_grammar() -> None:
    rules = parse_rules(" /admin/ = group:admins ; ; /health=public;")
    assert rules == (Rule("/admin/", Policy("group", groups=frozenset({"admins"}))), Rule("/health", Policy("public")))


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("/admin", r"'/admin' is not \[HOST\]PATH=POLICY"),
        ("admin=public", r"'admin=public': 'admin' is not PATH or HOST/PATH \(PATH starts with /\)"),
        ("=public", r"'=public': '' is not PATH or HOST/PATH"),
        ("/ok=public;/admin=admins", r"'/admin=admins': unknown policy 'admins'"),
        ("/x=group:", r"'/x=group:': group takes one or more values"),
    ],
)
def test_rules_grammar_errors_name_the_entry(text: str, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        parse_rules(text)


def test_public_paths_grammar() -> None:
    assert parse_paths(" /health , /static/ ,, ") == ("/health", "/static/")


def test_public_paths_must_be_absolute() -> None:
    with pytest.raises(ValueError, match=r"'static/', 'x' must start with /"):
        parse_paths("/ok, static/, x")


# Each policy's check ---------------------------------------------------------------------------------------------
def test_public_lets_anyone_through() -> None:
    Policy("public").check(None)
    Policy("public").check(identity())


def test_deny_refuses_even_a_signed_in_user() -> None:
    with pytest.raises(Forbidden, match="closed"):
        Policy("deny").check(identity())


@pytest.mark.parametrize("text", ["authenticated", "group:admins", "email-domain:example.com", "scope:read"])
def test_every_identity_policy_sends_the_anonymous_to_sign_in(text: str) -> None:
    with pytest.raises(NeedsSignIn):
        Policy.parse(text).check(None)


def test_authenticated_lets_any_signed_in_identity_through() -> None:
    Policy("authenticated").check(identity(groups=(), email=None))


def test_group_lets_members_of_any_listed_group_through() -> None:
    Policy.parse("group:ops|admins").check(identity(groups=("staff", "admins")))


def test_group_refuses_a_non_member() -> None:
    with pytest.raises(Forbidden, match="not in a group"):
        Policy.parse("group:admins").check(identity(groups=("Admins", "staff")))


def test_email_domain_lets_a_verified_address_of_the_domain_through() -> None:
    Policy.parse("email-domain:example.com").check(identity(email="Alice@EXAMPLE.com"))


@pytest.mark.parametrize(
    "who",
    [
        identity(email="alice@example.org"),
        identity(email="alice@sub.example.com"),
        identity(email="alice@example.com", email_verified=False),
        identity(email=None),
    ],
    ids=["other-domain", "subdomain", "unverified", "no-email"],
)
def test_email_domain_refuses_others(who) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(Forbidden, match="e-mail domain"):
        Policy.parse("email-domain:example.com").check(who)


def test_a_star_domain_is_any_domain_as_in_oauth2_proxy() -> None:
    assert email_domains(["*"]) == email_domains(["example.com", " * "]) == frozenset()
    assert email_domains([" @Example.COM ", "", "b.org"]) == frozenset({"example.com", "b.org"})
    Policy.parse("email-domain:*").check(identity(email="alice@anywhere.example"))


def test_allowed_emails_let_only_those_verified_addresses_through() -> None:
    policy = Policy("authenticated", emails=frozenset({"alice@example.com"}))
    policy.check(identity(email="Alice@Example.com"))
    for who in (identity(email="bob@example.com"), identity(email="alice@example.com", email_verified=False)):
        with pytest.raises(Forbidden, match="e-mail address"):
            policy.check(who)


def test_scope_lets_a_token_with_any_listed_scope_through() -> None:
    Policy.parse("scope:reports/read|reports/write").check(identity(scopes=frozenset({"reports/read"})))


def test_scope_refuses_a_token_without_one_and_names_the_scopes() -> None:
    with pytest.raises(InsufficientScope) as caught:
        Policy.parse("scope:reports/write").check(identity(scopes=frozenset({"reports/read"})))
    assert caught.value.scopes == frozenset({"reports/write"})


# Which rule a path falls under -----------------------------------------------------------------------------------
ADMINS, OPS = Policy.parse("group:admins"), Policy.parse("group:ops")


def table(text: str, **build: object) -> AccessRules:
    return AccessRules.build(rules=parse_rules(text), **build)  # type: ignore[arg-type]


def test_the_longest_matching_entry_wins() -> None:
    rules = table("/=public;/app/=group:admins;/app/ops/=group:ops")
    assert rules.policy_for("/app/ops/run") == OPS
    assert rules.policy_for("/app/home") == ADMINS
    assert rules.policy_for("/other") == Policy("public")


def test_an_exact_entry_beats_a_prefix_of_the_same_length() -> None:
    rules = table("/app/=group:admins;/app=public")
    assert rules.policy_for("/app") == Policy("public")
    assert rules.policy_for("/app/x") == ADMINS


def test_the_order_of_the_entries_does_not_matter() -> None:
    assert table("/app/ops/=group:ops;/app/=group:admins").policy_for("/app/ops/x") == OPS
    assert table("/app=public;/app/=group:admins").policy_for("/app") == Policy("public")


def test_an_exact_entry_matches_only_its_path() -> None:
    rules = table("/health=public")
    assert rules.policy_for("/health") == Policy("public")
    for other in ("/health/", "/health/x", "/healthz", "/health.json"):
        assert rules.policy_for(other) == rules.default, other


def test_a_prefix_also_matches_itself_without_the_slash() -> None:
    rules = table("/x/=group:admins")
    assert rules.policy_for("/x") == ADMINS
    assert rules.policy_for("/x/") == ADMINS
    assert rules.policy_for("/x/y/z") == ADMINS


def test_a_prefix_does_not_match_a_longer_name() -> None:
    rules = table("/x/=public")
    assert rules.policy_for("/xy") == rules.default
    assert rules.policy_for("/x.html") == rules.default


def test_a_later_entry_for_the_same_path_replaces_the_earlier() -> None:
    """GATEWAY_RULES come after GATEWAY_PUBLIC_PATHS, so a rule overrides a public path."""
    rules = AccessRules.build(public_paths=("/reports/",), rules=parse_rules("/reports/=group:admins"))
    assert rules.policy_for("/reports/q") == ADMINS


def test_the_global_default_is_signed_in() -> None:
    assert AccessRules.build().policy_for("/anything") == Policy("authenticated")


def test_the_global_default_carries_the_allowed_groups_and_email_domains() -> None:
    rules = AccessRules.build(allowed_groups=frozenset({"staff"}), allowed_email_domains=frozenset({"example.com"}))
    default = rules.policy_for("/anything")
    default.check(identity(groups=("staff",)))
    with pytest.raises(Forbidden, match="not in a group"):
        default.check(identity(groups=("admins",)))
    with pytest.raises(Forbidden, match="e-mail domain"):
        default.check(identity(groups=("staff",), email="alice@example.org"))
    with pytest.raises(NeedsSignIn):
        default.check(None)


def test_a_per_path_entry_replaces_the_global_policy_on_its_paths() -> None:
    rules = table("/open/=authenticated", allowed_groups=frozenset({"staff"}))
    rules.policy_for("/open/x").check(identity(groups=()))
    with pytest.raises(Forbidden):
        rules.policy_for("/closed").check(identity(groups=()))


def test_public_paths_are_public() -> None:
    rules = AccessRules.build(public_paths=("/health", "/static/"))
    assert rules.policy_for("/health") == Policy("public")
    assert rules.policy_for("/static/app.js") == Policy("public")
    assert rules.policy_for("/") == Policy("authenticated")


# Spellings of /admin: each is either the protected rule or a 400, never the public one ------------------------
SPELLINGS = [
    "/public/../admin",
    "/public/%2e%2e/admin",
    "/public%2Fadmin",
    "/public%2F..%2Fadmin",
    "//admin",
    "/Admin",
    "/admin;x",
    "/public/..;/admin",
    "/public/%252e%252e/admin",
    "/%61dmin",
]
PROTECTED = ["authenticated", "deny", "group:admins", "email-domain:example.com", "scope:admin"]


def outcome(rules: AccessRules, path: str) -> Policy | str:
    try:
        return rules.policy_for(path)
    except BadRequest as exc:
        return exc.code


@pytest.mark.parametrize("admin_path", ["/admin/", "/admin"], ids=["prefix", "exact"])
@pytest.mark.parametrize("kind", PROTECTED)
@pytest.mark.parametrize("spelling", SPELLINGS)
def test_no_spelling_of_a_protected_path_gets_the_public_rule(spelling: str, kind: str, admin_path: str) -> None:
    protected = Policy.parse(kind)
    rules = AccessRules.build(public_paths=("/public/",), rules=[Rule(admin_path, protected)])
    assert outcome(rules, spelling) in (protected, "ambiguous_path")


# Every spelling above but /public%2Fadmin, which no reading turns into /admin (decoded, it is /public/admin).
NAMING_ADMIN = [s for s in SPELLINGS if s != "/public%2Fadmin"]


@pytest.mark.parametrize("admin_path", ["/admin/", "/admin"], ids=["prefix", "exact"])
@pytest.mark.parametrize("kind", PROTECTED)
@pytest.mark.parametrize("spelling", NAMING_ADMIN)
def test_no_spelling_escapes_to_the_default_either(spelling: str, kind: str, admin_path: str) -> None:
    """With everything unmatched public, a reading that slipped past the protected entry would show."""
    protected = Policy.parse(kind)
    rules = AccessRules([Rule("/public/", Policy("public")), Rule(admin_path, protected)], default=Policy("public"))
    assert outcome(rules, spelling) in (protected, "ambiguous_path")


def test_the_plain_protected_path_gets_its_rule_not_a_400() -> None:
    rules = AccessRules([Rule("/public/", Policy("public")), Rule("/admin/", ADMINS)], default=Policy("public"))
    assert rules.policy_for("/admin/users") == ADMINS
    assert rules.policy_for("/public/admin") == Policy("public")


def test_a_spelling_under_one_rule_on_every_reading_is_not_refused() -> None:
    """Ambiguity is about rules, not escapes: ``/public/a%20b`` reads two ways, both public."""
    rules = AccessRules([Rule("/public/", Policy("public")), Rule("/admin/", ADMINS)], default=ADMINS)
    assert rules.policy_for("/public/a%20b") == Policy("public")


@pytest.mark.parametrize("target", ["/admin\\x", "/a%00b", "/a%5Cb", "/a\tb", "admin"])
def test_targets_no_honest_client_sends_are_refused(target: str) -> None:
    with pytest.raises(BadRequest) as caught:
        AccessRules.build().policy_for(target)
    assert caught.value.code == "invalid_path"
