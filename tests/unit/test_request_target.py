"""gateway.request_target: every path an upstream might route a request target to, and the targets refused outright."""

from __future__ import annotations

import pytest

from gateway.errors import BadRequest
from gateway.request_target import MAX_READINGS, readings


def test_a_plain_path_has_one_reading_and_needs_no_case_folding() -> None:
    assert readings("/reports/2024-q1.html") == (frozenset({"/reports/2024-q1.html"}), False)


@pytest.mark.parametrize(
    ("target", "reading"),
    [
        ("/a/b/../c", "/a/c"),  # dot segments resolved (RFC 3986 5.2.4)
        ("/a/./b", "/a/b"),
        ("/a/b/..", "/a/"),
        ("/../../a", "/a"),  # ".." above the root stays at the root
        ("/a%2Fb", "/a/b"),  # %2F read as a separator
        ("/a%2F..%2Fb", "/b"),  # ... and then as a traversal
        ("/a//b", "/a/b"),  # merged slashes
        ("/a;jsessionid=1/b", "/a/b"),  # ;params dropped (Tomcat, Spring)
        ("/a/..;/b", "/b"),  # ".." once its ;param is dropped
        ("/%2561", "/a"),  # decoded twice
        ("/%7Euser", "/~user"),
    ],
)
def test_each_reading_an_upstream_may_make_is_included(target: str, reading: str) -> None:
    found, _ = readings(target)
    assert reading in found


def test_the_target_as_sent_is_a_reading_too() -> None:
    found, _ = readings("/a%2Fb")
    assert "/a%2Fb" in found, "an upstream that keeps %2F inside the segment"


def test_a_capital_letter_asks_for_case_folding() -> None:
    assert readings("/Admin")[1] is True


@pytest.mark.parametrize(
    "target",
    ["/a\\b", "/a%5Cb", "/a%5cb", "/a%00b", "/a%0Ab", "/a%0d%0ab", "/a%7Fb", "/a\x01b", "/a\tb"],
)
def test_control_characters_and_backslashes_are_refused(target: str) -> None:
    with pytest.raises(BadRequest) as caught:
        readings(target)
    assert caught.value.code == "invalid_path"


@pytest.mark.parametrize("target", ["/a%255Cb", "/a%2500b"])
def test_a_control_character_behind_a_second_decode_is_refused(target: str) -> None:
    with pytest.raises(BadRequest) as caught:
        readings(target)
    assert caught.value.code == "invalid_path"


@pytest.mark.parametrize("target", ["", "admin", "*", "http://other.example/admin"])
def test_a_target_that_is_not_a_path_is_refused(target: str) -> None:
    with pytest.raises(BadRequest) as caught:
        readings(target)
    assert caught.value.code == "invalid_path"


def test_a_target_with_too_many_readings_is_refused_as_ambiguous() -> None:
    target = "/%25252525252525252561//a;b/%2e%2e/c%2F..%2Fd"  # eight decodes, each mixed with the other readings
    with pytest.raises(BadRequest) as caught:
        readings(target)
    assert caught.value.code == "ambiguous_path"


def test_a_target_with_some_readings_stays_under_the_bound() -> None:
    found, _ = readings("/a/%2e%2e/b;x//c")
    assert 1 < len(found) <= MAX_READINGS
