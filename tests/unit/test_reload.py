"""What a reload applies and what waits for a restart (gateway/reload.py)."""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from gateway import reload as reload_module
from gateway.reload import _RESTART_ONLY, Reloader, _keep_restart_only
from gateway.settings import build_config, token_hash

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


class _Recording(Reloader):
    """The real watch loop; the reload only records why it was asked for."""

    def __init__(self, path: Path) -> None:
        super().__init__(SimpleNamespace(config=build_config(RAW)), path)  # type: ignore[arg-type]
        self.reasons: list[str] = []

    async def reload(self, why: str) -> bool:
        self.reasons.append(why)
        return True


async def _watching(path: Path, act: Callable[[], Awaitable[None]]) -> list[str]:
    reloader = _Recording(path)
    stop = asyncio.Event()
    task = asyncio.create_task(reloader.watch(stop))
    await asyncio.sleep(0.05)
    await act()
    await asyncio.sleep(0.2)
    stop.set()
    await task
    return reloader.reasons


@pytest.fixture
def quick_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reload_module, "POLL_MS", 10)
    monkeypatch.setattr(reload_module, "DEBOUNCE_MS", 10)


@pytest.mark.usefixtures("quick_polls")
def test_two_edits_within_one_second_are_two_reloads(tmp_path: Path) -> None:
    """An editor's or a deploy tool's write-and-rename, twice, well inside one second: both are seen
    (watchfiles' own polling compared whole seconds and missed the second)."""
    config = tmp_path / "gateway.yaml"
    config.write_text("a: 1\n")

    async def edit_twice() -> None:
        for text in ("a: 2\n", "a: 3\n"):
            fresh = tmp_path / "gateway.yaml.new"
            fresh.write_text(text)
            fresh.replace(config)
            await asyncio.sleep(0.1)

    assert asyncio.run(_watching(config, edit_twice)) == ["file change: gateway.yaml"] * 2


@pytest.mark.usefixtures("quick_polls")
def test_a_busy_file_next_to_the_config_reloads_nothing(tmp_path: Path) -> None:
    """A log written next to the config (``serve --config gateway.yaml > gateway.log``)."""
    config = tmp_path / "gateway.yaml"
    config.write_text("a: 1\n")

    async def log_busily() -> None:
        with (tmp_path / "gateway.log").open("a") as out:
            for i in range(200):
                out.write(f"line {i}\n")
                out.flush()
                await asyncio.sleep(0.001)

    assert asyncio.run(_watching(config, log_busily)) == []


@pytest.mark.usefixtures("quick_polls")
def test_an_edit_in_place_and_a_removal_are_changes(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("a: 1\n")

    async def edit_then_remove() -> None:
        config.write_text("a: 22\n")  # same inode, new size and times
        await asyncio.sleep(0.1)
        config.unlink()

    assert asyncio.run(_watching(config, edit_then_remove)) == ["file change: gateway.yaml"] * 2


@pytest.mark.usefixtures("quick_polls")
def test_the_files_watched_follow_a_config_reloaded_by_sighup(tmp_path: Path) -> None:
    """A reload the watcher did not start (SIGHUP) makes the config read a tokens file: a change to
    that file is then a reload too."""
    config = tmp_path / "gateway.yaml"
    config.write_text("a: 1\n")
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(f'- "sha256:{token_hash("pgw_" + "a" * 40)}"\n')
    reloader = _Recording(config)

    async def scenario() -> list[str]:
        stop = asyncio.Event()
        task = asyncio.create_task(reloader.watch(stop))
        await asyncio.sleep(0.05)
        raw = copy.deepcopy(RAW)
        raw["clients"].append({"name": "ci", "tokens_file": "tokens.yaml", "rules": [{"key": "k"}]})
        reloader.runtime.config = build_config(raw, base=tmp_path)  # what SIGHUP's reload swaps in
        await asyncio.sleep(0.05)
        tokens.write_text(f'- "sha256:{token_hash("pgw_" + "b" * 40)}"\n')
        await asyncio.sleep(0.2)
        stop.set()
        await task
        return reloader.reasons

    assert asyncio.run(scenario()) == ["file change: tokens.yaml"]
