"""PathTable: its lookups are remembered per (path, host), and a remembered outcome is the computed one."""

from __future__ import annotations

import pytest

from gateway.errors import BadRequest
from gateway.path_table import DECISIONS_KEPT, Entry, PathTable


def table() -> PathTable[str | None]:
    return PathTable([Entry("/admin/", "admin"), Entry("/public/", "public")], default=None)


def test_a_remembered_path_gives_the_same_value_and_a_missing_entry_stays_none():
    paths = table()
    assert [paths.lookup("/admin/x") for _ in range(3)] == ["admin"] * 3
    assert [paths.lookup("/elsewhere") for _ in range(3)] == [None] * 3


def test_an_ambiguous_path_is_refused_every_time_not_only_the_first():
    paths = table()
    for _ in range(3):
        with pytest.raises(BadRequest) as refused:
            paths.lookup("/public/%2e%2e/admin/x")
        assert refused.value.code == "ambiguous_path"


def test_the_host_is_part_of_what_is_remembered():
    paths = PathTable([Entry("/", "app", host="app.example"), Entry("/", "other")], default=None)
    assert paths.lookup("/x", "app.example") == "app"
    assert paths.lookup("/x", "evil.example") == "other"
    assert paths.lookup("/x", "app.example") == "app"


def test_what_is_remembered_stays_bounded_however_many_paths_clients_send():
    paths = table()
    for n in range(DECISIONS_KEPT + 500):
        paths.lookup(f"/flood/{n}")
    assert len(paths._decided) == DECISIONS_KEPT
    assert paths.lookup("/admin/") == "admin"
    assert paths.lookup(f"/flood/{DECISIONS_KEPT + 499}") is None
