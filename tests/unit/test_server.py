"""gateway.server's process tuning (the serving itself is tested end to end: tests/test_server_*.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from gateway.server import GC_YOUNG_THRESHOLD, tune_gc


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_serving_freezes_the_startup_objects_and_collects_the_young_less_often(restored_gc: None) -> None:
    older = gc.get_threshold()[1:]
    survivor = [object()]  # a container that exists before serving starts
    tune_gc()
    assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *older)
    assert gc.get_freeze_count() > 0 and gc.is_tracked(survivor)
    gc.collect()  # cycles made later are still collected
    cycle: list[object] = []
    cycle.append(cycle)
    del cycle
    assert gc.collect() >= 1
