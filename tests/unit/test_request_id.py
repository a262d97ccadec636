"""gateway.request_id: a trusted hop's printable id is kept, anything else gets a fresh 32-hex-digit one."""

from __future__ import annotations

import re

from gateway.request_id import choose, new


def test_a_new_id_is_32_fresh_hex_digits() -> None:
    ids = {new() for _ in range(100)}
    assert len(ids) == 100 and all(re.fullmatch(r"[0-9a-f]{32}", rid) for rid in ids)


def test_only_a_trusted_hop_names_the_request() -> None:
    assert choose(["abc-1"], trusted=True) == "abc-1"
    assert choose(["abc-1"], trusted=False) != "abc-1"
    assert choose(["a", "b"], trusted=True) not in ("a", "b")
    assert choose(["bad id"], trusted=True) != "bad id"
