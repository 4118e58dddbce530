"""Live operation of the real gateway process: config reload (file edit under load, kubelet-style symlink
swap, SIGHUP, an invalid edit) and graceful shutdown (readiness, drain, abort at the timeout)."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gateway.settings import token_hash
from gateway.standin import _BLOCK, StandinServer, _content
from tests.e2e.conftest import TOKEN_CI, Gateway, base_config, running_gateway
from tests.processes import free_port

NEWCOMER = "pgw_newcomer_" + "n" * 40


def _add_newcomer(config: dict[str, Any]) -> None:
    config["clients"].append(
        {
            "name": "newcomer",
            "tokens": [f"sha256:{token_hash(NEWCOMER)}"],
            "rules": [{"paths": ["/__standin/**"], "key": "read"}],
        }
    )


def _rewrite(path: Path, change: Any) -> None:
    """Edit the config as an editor or a deploy tool does: write a new file, rename it into place."""
    config = yaml.safe_load(path.read_text())
    change(config)
    fresh = path.with_suffix(".new")
    fresh.write_text(yaml.safe_dump(config))
    fresh.replace(path)


def _status(gw: Gateway, token: str) -> int:
    return httpx.get(gw.url + "/__standin/echo", headers={"X-ApiKey": token}, timeout=10).status_code


def _until(predicate: Any, within: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < within:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"not within {within} s")


@pytest.fixture
def live(tmp_path: Path, standin_server: StandinServer) -> Iterator[Gateway]:
    with running_gateway(tmp_path, standin_server) as gw:
        yield gw


def test_a_config_edit_under_load_applies_within_two_seconds_with_no_failed_request(live: Gateway) -> None:
    assert _status(live, NEWCOMER) == 401
    statuses: list[int] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def one(_: int) -> None:
        try:
            statuses.append(_status(live, TOKEN_CI))
        except BaseException as exc:  # a reset or a timeout is a failed request too
            errors.append(exc)

    def load() -> None:
        with ThreadPoolExecutor(32) as pool:
            list(pool.map(one, range(1200)))
        done.set()

    loader = threading.Thread(target=load)
    loader.start()
    _until(lambda: len(statuses) > 200, 30)
    _rewrite(live.config_path, _add_newcomer)
    took = _until(lambda: _status(live, NEWCOMER) == 200, 5)
    loader.join(60)
    assert done.is_set() and not errors, errors[:3]
    assert len(statuses) == 1200 and set(statuses) == {200}
    assert took < 2, f"applied after {took:.2f} s"
    scraped = httpx.get(live.admin_url + "/metrics", timeout=10).text
    reloads = float(re.search(r'proget_gateway_config_reloads_total\{result="success"\} (\S+)', scraped)[1])  # type: ignore[index]
    generation = float(re.search(r"^proget_gateway_config_generation (\S+)", scraped, re.M)[1])  # type: ignore[index]
    assert reloads >= 1 and generation == 1 + reloads  # a write and a rename may be two reloads
    assert live.audit_lines()[-1]["config_generation"] == generation


def test_an_invalid_edit_keeps_the_old_config_serving_and_says_why(live: Gateway) -> None:
    def broken(config: dict[str, Any]) -> None:
        _add_newcomer(config)
        config["clients"][-1]["rules"][0]["key"] = "nope"
        config["keys"]["read"] = {"value": "proget-key-read-0123456789", "env": "ALSO"}

    _rewrite(live.config_path, broken)
    _until(lambda: "config reload (file change: gateway.yaml) refused" in live.log_path.read_text(), 5)
    log = live.log_path.read_text()
    assert "unknown key 'nope'" in log and "keys.read: give exactly one of env, file, value" in log
    assert "proget-key-read-0123456789" not in log
    assert _status(live, TOKEN_CI) == 200 and _status(live, NEWCOMER) == 401
    assert httpx.get(live.admin_url + "/readyz", timeout=10).status_code == 200
    assert (
        'proget_gateway_config_reloads_total{result="failure"} 1.0'
        in httpx.get(live.admin_url + "/metrics", timeout=10).text
    )


def test_a_kubelet_style_symlink_swap_is_picked_up(tmp_path: Path, standin_server: StandinServer) -> None:
    """A mounted ConfigMap: gateway.yaml → ..data/gateway.yaml, ..data → ..v1; the update swaps ..data."""
    mount = tmp_path / "mount"
    (mount / "..v1").mkdir(parents=True)
    config = base_config(standin_server.url, free_port(), free_port())
    (mount / "..v1" / "gateway.yaml").write_text(yaml.safe_dump(config))
    (mount / "..data").symlink_to("..v1")
    (mount / "gateway.yaml").symlink_to("..data/gateway.yaml")
    with running_gateway(tmp_path, standin_server, config_file=mount / "gateway.yaml") as gw:
        assert _status(gw, NEWCOMER) == 401
        _add_newcomer(config)
        (mount / "..v2").mkdir()
        (mount / "..v2" / "gateway.yaml").write_text(yaml.safe_dump(config))
        (mount / "..data_tmp").symlink_to("..v2")
        os.replace(mount / "..data_tmp", mount / "..data")  # the kubelet's atomic swap
        _until(lambda: _status(gw, NEWCOMER) == 200, 5)


def test_sighup_reloads_when_watching_is_off(tmp_path: Path, standin_server: StandinServer) -> None:
    with running_gateway(tmp_path, standin_server, extra_args=["--no-reload"]) as gw:
        _rewrite(gw.config_path, _add_newcomer)
        time.sleep(1)
        assert _status(gw, NEWCOMER) == 401  # not watched
        gw.process.send_signal(signal.SIGHUP)
        _until(lambda: _status(gw, NEWCOMER) == 200, 5)
        assert gw.process.poll() is None  # SIGHUP used to kill the process (exit 129)


def test_socket_and_exporter_settings_wait_for_a_restart_the_rest_applies(live: Gateway) -> None:
    """listen, admin (keep-alive included) and tracing keep their running values and are logged as
    needing a restart; the same edit's new client is served at once."""
    old_admin = live.admin_url

    def edit(config: dict[str, Any]) -> None:
        _add_newcomer(config)
        config["admin"]["port"] = free_port()
        config["listen"]["keep_alive_timeout"] = 30
        config["tracing"] = {"otlp_endpoint": "http://127.0.0.1:9"}
        config["limits"]["max_header_bytes"] = 4096  # the listener's head budget is built at start
        config["limits"]["max_rewrite_body_bytes"] = 1024  # applies: not a listener setting

    _rewrite(live.config_path, edit)
    _until(lambda: _status(live, NEWCOMER) == 200, 5)
    assert httpx.get(old_admin + "/readyz", timeout=5).status_code == 200  # still the old admin port
    log = live.log_path.read_text()
    for name in ("listen", "admin", "tracing", "limits.max_header_bytes"):
        assert f"config reload: {name} changed; it needs a restart and is not applied" in log
    assert "limits changed" not in log and "max_rewrite_body_bytes changed" not in log
    big = httpx.post(
        live.url + "/api/json/Feeds_GetFeeds",
        headers={"X-ApiKey": TOKEN_CI, "Content-Type": "application/json"},
        content=b'{"pad": "' + b"p" * 2000 + b'"}',
        timeout=10,
    )
    assert big.headers["x-gateway-error"] == "body_too_large"  # the new body cap is in force
    assert "traces on" not in log and "OTLP/HTTP" not in log


@pytest.fixture
def draining(tmp_path: Path, standin_server: StandinServer) -> Iterator[Gateway]:
    def shutdown(config: dict[str, Any]) -> None:
        config["shutdown"] = {"drain_delay": 1, "timeout": 3}

    with running_gateway(tmp_path, standin_server, mutate=shutdown) as gw:
        yield gw


def _download(gw: Gateway, size: int, out: dict[str, Any]) -> None:
    try:
        with httpx.stream(
            "GET",
            gw.url + f"/__standin/download-slow?size={size}",
            headers={"X-ApiKey": TOKEN_CI},
            timeout=30,
        ) as response:
            out["bytes"] = sum(len(chunk) for chunk in response.iter_raw())
    except httpx.HTTPError as exc:
        out["error"] = exc


@pytest.mark.parametrize(
    ("size", "complete"), [(6_000_000, True), (60_000_000, False)], ids=["finishes", "aborted"]
)
def test_sigterm_drains_in_flight_requests_then_aborts_at_the_timeout(
    draining: Gateway, size: int, complete: bool
) -> None:
    out: dict[str, Any] = {}
    downloader = threading.Thread(target=_download, args=(draining, size, out))
    downloader.start()
    time.sleep(0.3)
    draining.process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    ready = httpx.get(draining.admin_url + "/readyz", timeout=5)
    assert ready.status_code == 503 and ready.json()["draining"] is True
    assert _status(draining, TOKEN_CI) == 200  # still accepting during drain_delay
    assert draining.process.wait(timeout=10) == 0
    exited = time.monotonic() - signalled
    downloader.join(10)
    if complete:
        assert out.get("bytes") == size, out
    else:
        assert "error" in out or out.get("bytes", 0) < size, out  # never a body that looks complete
        assert exited < 1 + 3 + 2, f"exited {exited:.1f} s after SIGTERM"
        line = [a for a in draining.audit_lines() if "download-slow" in a["path"]][-1]
        assert line["reason"] == "shutdown_aborted"
    assert "shutdown: /readyz answers 503" in draining.log_path.read_text()


@pytest.mark.slow
def test_sigterm_during_a_one_gib_download_lets_it_finish_intact(
    tmp_path: Path, standin_server: StandinServer
) -> None:
    """A 1 GiB download running when SIGTERM arrives completes byte for byte inside shutdown.timeout,
    and the process then exits 0 (curl is the client, a process of its own)."""
    size = 1024**3
    expected = hashlib.sha256()
    block = _content(0, len(_BLOCK))  # the body is _BLOCK repeated: hash it without holding 1 GiB
    for _ in range(size // len(block)):
        expected.update(block)
    expected.update(block[: size % len(block)])

    def shutdown(config: dict[str, Any]) -> None:
        config["shutdown"] = {"drain_delay": 0.5, "timeout": 120}

    with running_gateway(tmp_path, standin_server, mutate=shutdown) as gw:
        url = f"{gw.url}/api/packages/internal/download?name=big&version=1&size={size}"
        curl = subprocess.Popen(
            ["curl", "-sS", "--fail", "-H", f"X-ApiKey: {TOKEN_CI}", url], stdout=subprocess.PIPE
        )
        assert curl.stdout is not None
        got, received = hashlib.sha256(), 0
        while received < 64 * 1024 * 1024:  # well under way
            chunk = curl.stdout.read(1 << 20)
            assert chunk, "the download ended early"
            got.update(chunk)
            received += len(chunk)
        gw.process.send_signal(signal.SIGTERM)
        while chunk := curl.stdout.read(1 << 20):
            got.update(chunk)
            received += len(chunk)
        assert curl.wait(timeout=60) == 0
        assert gw.process.wait(timeout=30) == 0
        assert (received, got.hexdigest()) == (size, expected.hexdigest())
        line = [a for a in gw.audit_lines() if "download" in a["path"]][-1]
        assert (line["status"], line["decision"], line["bytes_out"]) == (200, "allow", size)
