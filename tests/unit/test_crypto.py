"""gateway.crypto: sealed values open only under our keys, for their purpose, within their age; older secrets and
Fernet values from earlier releases still open, marked for rewriting."""

from __future__ import annotations

import base64

import pytest
from cryptography.exceptions import UnsupportedAlgorithm

from gateway import crypto
from gateway.crypto import LOGIN_PURPOSE, MAX_CLOCK_SKEW, SESSION_PURPOSE, CipherUnavailable, InvalidToken, Sealer

from ..support import FakeClock
from .factories import legacy_fernet

OURS, OLDER = b"o" * 32, b"p" * 32


def sealer(clock: FakeClock, *secrets: bytes, purpose: bytes = SESSION_PURPOSE) -> Sealer:
    return Sealer(secrets or (OURS,), purpose, clock)


def test_a_value_opens_as_it_was_sealed_and_is_not_stale() -> None:
    clock = FakeClock(1_700_000_000)
    assert sealer(clock).open(sealer(clock).seal(b"payload")) == (b"payload", False)


def test_a_sealed_value_is_an_unpadded_cookie_safe_token_that_hides_the_plaintext() -> None:
    token = sealer(FakeClock()).seal(b"alice@example.com")
    assert b"=" not in token and b"alice" not in token
    assert set(token.decode()) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_two_seals_of_the_same_value_differ() -> None:
    clock = FakeClock()
    assert sealer(clock).seal(b"same") != sealer(clock).seal(b"same")


def test_every_altered_byte_is_refused() -> None:
    clock = FakeClock()
    raw = bytearray(base64.urlsafe_b64decode(sealer(clock).seal(b"payload") + b"=="))
    for index in range(len(raw)):
        altered = bytearray(raw)
        altered[index] ^= 0x01
        with pytest.raises(InvalidToken):
            sealer(clock).open(base64.urlsafe_b64encode(bytes(altered)))


@pytest.mark.parametrize("token", [b"", b"AA", b"not base64 at all!", b"Ag" + b"A" * 20, b"Aw" + b"A" * 80])
def test_garbage_truncated_or_unknown_versions_are_refused(token: bytes) -> None:
    with pytest.raises(InvalidToken):
        sealer(FakeClock()).open(token)


def test_a_value_sealed_for_another_purpose_does_not_open() -> None:
    clock = FakeClock()
    with pytest.raises(InvalidToken):
        sealer(clock, purpose=LOGIN_PURPOSE).open(sealer(clock).seal(b"session"))


def test_a_value_under_an_older_secret_opens_and_is_marked_for_rewriting() -> None:
    clock = FakeClock()
    old_token = sealer(clock, OLDER).seal(b"payload")
    assert sealer(clock, OURS, OLDER).open(old_token) == (b"payload", True)
    with pytest.raises(InvalidToken):
        sealer(clock, OURS).open(old_token)


def test_the_age_limit_is_kept_on_the_injected_clock() -> None:
    clock = FakeClock(1_700_000_000)
    token = sealer(clock).seal(b"payload")
    clock.advance(600)
    assert sealer(clock).open(token, ttl=600)[0] == b"payload"
    clock.advance(1)
    with pytest.raises(InvalidToken):
        sealer(clock).open(token, ttl=600)
    assert sealer(clock).open(token)[0] == b"payload", "no ttl: no age limit (Redis expires its own copies)"


def test_a_value_from_beyond_the_clock_skew_is_refused() -> None:
    """Otherwise a value sealed by a clock set ahead would outlive its TTL."""
    ahead = FakeClock(1_700_000_000 + MAX_CLOCK_SKEW + 1)
    token = sealer(ahead).seal(b"payload")
    with pytest.raises(InvalidToken):
        sealer(FakeClock(1_700_000_000)).open(token, ttl=600)
    assert sealer(FakeClock(1_700_000_002)).open(sealer(FakeClock(1_700_000_060)).seal(b"p"))[0] == b"p"


def test_a_fernet_value_of_an_earlier_release_opens_once_as_stale() -> None:
    legacy = legacy_fernet(OURS, SESSION_PURPOSE).encrypt(b"payload")
    assert sealer(FakeClock()).open(legacy) == (b"payload", True)
    assert sealer(FakeClock()).open(legacy.rstrip(b"=")) == (b"payload", True), "cookies carry it unpadded"
    with pytest.raises(InvalidToken):
        sealer(FakeClock(), purpose=LOGIN_PURPOSE).open(legacy)


def test_without_a_ttl_a_value_from_a_clock_ahead_still_opens() -> None:
    """Redis copies carry no TTL here (Redis expires them): a replica whose clock runs ahead signs nobody out."""
    token = sealer(FakeClock(1_700_000_000 + 3600)).seal(b"payload")
    assert sealer(FakeClock(1_700_000_000)).open(token) == (b"payload", False)


def test_a_value_has_one_spelling() -> None:
    """The decoder would skip stray characters and read "+" "/" as "-" "_": such variants are refused."""
    token = sealer(FakeClock()).seal(b"payload" * 9).decode()
    variants = [token[:10] + "!" + token[10:], token + "====", token.replace("-", "+").replace("_", "/"), " " + token]
    variants = [v for v in variants if v != token]
    assert len(variants) >= 3
    for variant in variants:
        with pytest.raises(InvalidToken):
            sealer(FakeClock()).open(variant.encode())


def test_a_fernet_value_older_than_the_ttl_is_refused() -> None:
    legacy = legacy_fernet(OURS, SESSION_PURPOSE).encrypt_at_time(b"payload", 1_000_000_000)
    with pytest.raises(InvalidToken):
        sealer(FakeClock()).open(legacy, ttl=3600)


def test_a_cryptography_without_aes_gcm_siv_is_named_as_the_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    class Missing:
        def __init__(self, key: bytes) -> None:
            raise UnsupportedAlgorithm("AES-GCM-SIV is not supported by this version of OpenSSL")

    monkeypatch.setattr(crypto, "AESGCMSIV", Missing)
    with pytest.raises(CipherUnavailable, match=r"OpenSSL 3\.2 or later"):
        Sealer((OURS,), SESSION_PURPOSE)
