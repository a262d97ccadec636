"""The serving settings: their defaults, their units, and every bad value reported by name with the others."""

from __future__ import annotations

import os

import pytest

from gateway.config import ConfigError, ServerSettings, Settings, parse_size
from gateway.workers import usable_cpus

from .unit.test_config import MINIMAL


def test_defaults() -> None:
    server = Settings.from_env(MINIMAL).server
    assert server == ServerSettings(
        header_timeout=20, keepalive_timeout=75, max_connections=10_000, workers=usable_cpus(), shutdown_timeout=30
    )
    assert server.max_body_size is None
    assert 1 <= usable_cpus() <= len(os.sched_getaffinity(0))


def test_every_variable_is_read() -> None:
    env = {
        **MINIMAL,
        "GATEWAY_HEADER_TIMEOUT": "5s",
        "GATEWAY_KEEPALIVE_TIMEOUT": "2m",
        "GATEWAY_MAX_CONNECTIONS": "500",
        "GATEWAY_MAX_BODY_SIZE": "100MB",
        "GATEWAY_WORKERS": "3",
        "GATEWAY_SHUTDOWN_TIMEOUT": "0",
    }
    assert Settings.from_env(env).server == ServerSettings(5, 120, 500, 100 * 1024**2, 3, 0)


@pytest.mark.parametrize(
    ("raw", "size"), [("1048576", 1048576), ("512KB", 512 * 1024), ("100mb", 100 * 1024**2), ("1GiB", 1024**3)]
)
def test_sizes(raw: str, size: int) -> None:
    assert parse_size(raw) == size


@pytest.mark.parametrize("raw", ["off", "none", "0", ""])
def test_no_body_limit(raw: str) -> None:
    assert Settings.from_env({**MINIMAL, "GATEWAY_MAX_BODY_SIZE": raw}).server.max_body_size is None


def test_bad_values_are_all_named_at_once() -> None:
    bad = {
        "GATEWAY_HEADER_TIMEOUT": "soon",
        "GATEWAY_KEEPALIVE_TIMEOUT": "0.5s",
        "GATEWAY_MAX_CONNECTIONS": "0",
        "GATEWAY_MAX_BODY_SIZE": "huge",
        "GATEWAY_WORKERS": "two",
        "GATEWAY_SHUTDOWN_TIMEOUT": "-1",
    }
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**MINIMAL, **bad})
    assert sorted(p.split(":")[0] for p in caught.value.problems) == sorted(bad)
