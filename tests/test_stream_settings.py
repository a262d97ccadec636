"""The WebSocket and streaming settings, and origins compared the way browsers serialise them."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, Settings, StreamSettings
from gateway.origins import serialized_origin

from .unit.test_config import MINIMAL


def test_defaults_proxy_websockets_with_a_generous_idle_bound() -> None:
    streams = Settings.from_env(MINIMAL).streams
    assert streams == StreamSettings(
        proxy_websockets=True, websocket_origins=frozenset(), websocket_heartbeat=30.0, idle_timeout=3600.0
    )


def test_every_stream_variable_is_read() -> None:
    env = {
        **MINIMAL,
        "GATEWAY_PROXY_WEBSOCKETS": "false",
        "GATEWAY_WEBSOCKET_ORIGINS": "https://Tools.Example.com:443/, http://localhost:3000",
        "GATEWAY_WEBSOCKET_HEARTBEAT": "off",
        "GATEWAY_STREAM_IDLE_TIMEOUT": "15m",
    }
    streams = Settings.from_env(env).streams
    assert streams.proxy_websockets is False
    assert streams.websocket_origins == {"https://tools.example.com", "http://localhost:3000"}
    assert streams.websocket_heartbeat is None
    assert streams.idle_timeout == 900


@pytest.mark.parametrize("off", ["off", "0", "none", "OFF"])
def test_the_idle_bound_can_be_turned_off(off: str) -> None:
    assert Settings.from_env({**MINIMAL, "GATEWAY_STREAM_IDLE_TIMEOUT": off}).streams.idle_timeout is None


def test_bad_values_are_reported_naming_their_variable() -> None:
    env = {
        **MINIMAL,
        "GATEWAY_PROXY_WEBSOCKETS": "maybe",
        "GATEWAY_WEBSOCKET_ORIGINS": "https://ok.example.com,https://app.example.com/path,*,null",
        "GATEWAY_WEBSOCKET_HEARTBEAT": "0.01s",
        "GATEWAY_STREAM_IDLE_TIMEOUT": "soon",
    }
    with pytest.raises(ConfigError) as error:
        Settings.from_env(env)
    problems = "\n".join(error.value.problems)
    assert "GATEWAY_PROXY_WEBSOCKETS: 'maybe' is not true or false" in problems
    assert "GATEWAY_WEBSOCKET_ORIGINS: '*', 'https://app.example.com/path', 'null' are not origins" in problems
    assert "GATEWAY_WEBSOCKET_HEARTBEAT: must be at least 0.1s" in problems
    assert "GATEWAY_STREAM_IDLE_TIMEOUT: 'soon' is not a duration" in problems


@pytest.mark.parametrize(
    ("value", "origin"),
    [
        ("https://app.example.com", "https://app.example.com"),
        ("HTTPS://App.Example.COM:443", "https://app.example.com"),
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("http://[::1]:80", "http://[::1]"),
        ("https://bücher.example", "https://xn--bcher-kva.example"),
        ("null", None),
        ("https://app.example.com/x", None),
        ("https://user@app.example.com", None),
        ("https://app.example.com?x=1", None),
        ("ws://app.example.com", None),
        ("file://", None),
        ("https://app.example.com:99999", None),
        ("https://app.example.com.evil.example", "https://app.example.com.evil.example"),
    ],
)
def test_origins_are_serialised_as_browsers_send_them(value: str, origin: str | None) -> None:
    assert serialized_origin(value) == origin
