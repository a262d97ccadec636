"""gateway.redirects: which return-to targets are same-origin paths (kept as given) and which are refused."""

from __future__ import annotations

import pytest

from gateway.redirects import MAX_LENGTH, safe_redirect_path

from ..test_gateway_security import BAD_RD  # the same corpus the running gateway is attacked with


@pytest.mark.parametrize(
    "target",
    ["/", "/reports", "/reports?id=1&tab=a%2Fb", "/a%20b", "/api/whoami%3Fa%3D1", "/%E2%9C%93", "/a/../b", "/#top"],
)
def test_a_same_origin_path_is_returned_as_given(target: str) -> None:
    assert safe_redirect_path(target) == target


@pytest.mark.parametrize(
    "target",
    [
        *BAD_RD,
        "",
        None,
        "/%2525252F%2525252Fevil.example",  # one decode more than any honest link needs
        "/%7f/evil.example",
        "/\x7f/evil.example",
    ],
)
def test_anything_else_is_refused(target: str | None) -> None:
    assert safe_redirect_path(target) is None


def test_the_length_limit() -> None:
    assert safe_redirect_path("/" + "a" * (MAX_LENGTH - 1)) is not None
    assert safe_redirect_path("/" + "a" * MAX_LENGTH) is None


def test_a_path_needing_up_to_three_decodes_is_still_accepted() -> None:
    assert safe_redirect_path("/a%25252Fb") == "/a%25252Fb"


@pytest.mark.parametrize("char", [chr(c) for c in (*range(0x20), 0x7F)] + ["\\"])
def test_every_control_character_del_and_backslash_is_refused_anywhere(char: str) -> None:
    for target in (f"/{char}evil.example", f"/a{char}", f"/a?b={char}"):
        assert safe_redirect_path(target) is None
