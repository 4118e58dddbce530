"""What a reload applies and what waits for a restart (gateway/reload.py)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from gateway.reload import _RESTART_ONLY, _keep_restart_only
from gateway.settings import build_config

RAW: dict[str, Any] = {
    "upstream": {"url": "http://p"},
    "keys": {"k": {"value": "key"}},
    "clients": [{"name": "c", "anonymous": True, "rules": [{"key": "k"}]}],
}
CHANGED: dict[str, Any] = {
    "listen": {"port": 8181, "keep_alive_timeout": 30},
    "admin": {"port": 9191},
    "tracing": {"otlp_endpoint": "http://collector:4318"},
    "limits": {
        "head_timeout": 3,
        "max_target_bytes": 4096,
        "max_header_bytes": 4096,
        "max_header_count": 50,
        "max_rewrite_body_bytes": 4096,  # not a listener setting: applies
    },
    "native_api": {"allow": ["Feeds_GetFeeds"]},  # applies
}


def test_restart_only_settings_keep_their_running_values_and_the_rest_applies(
    caplog: pytest.LogCaptureFixture,
) -> None:
    old, new = build_config(RAW), build_config({**RAW, **CHANGED})
    with caplog.at_level(logging.WARNING):
        kept = _keep_restart_only(old, new).settings
    for dotted in _RESTART_ONLY:
        section, _, field = dotted.partition(".")
        running, got = getattr(old.settings, section), getattr(kept, section)
        assert (getattr(got, field) if field else got) == (getattr(running, field) if field else running)
        assert f"{dotted} changed; it needs a restart" in caplog.text
    assert kept.limits.max_rewrite_body_bytes == 4096
    assert kept.native_api.allow == ("Feeds_GetFeeds",)
    caplog.clear()
    assert _keep_restart_only(old, build_config(RAW)).settings == old.settings
    assert caplog.text == ""  # nothing changed, nothing said
