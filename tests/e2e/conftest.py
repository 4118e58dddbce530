"""End-to-end fixtures: the real gateway process in front of the recording ProGet stand-in, on loopback.

The gateway runs as its own process (``python -m gateway serve``), exactly as users run it, so tests see
real sockets, real framing and the real audit output; every process started here is stopped by PID.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvloop
import yaml

from gateway.outbox import Outbox
from gateway.settings import token_hash
from gateway.standin import Standin, StandinServer
from tests.processes import free_port, stop

TOKEN_CI = "pgw_ci_" + "a" * 40
TOKEN_READER = "pgw_reader_" + "b" * 40
KEY_READ = "proget-key-read-0123456789"
KEY_PUSH = "proget-key-push-9876543210"
KEY_NATIVE = "proget-key-native-5555555555"


def base_config(upstream_url: str, port: int, admin_port: int) -> dict[str, Any]:
    return {
        "upstream": {"url": upstream_url, "timeouts": {"connect": 2, "read": 6}},
        "listen": {"host": "127.0.0.1", "port": port},
        "admin": {"host": "127.0.0.1", "port": admin_port},
        "keys": {
            "read": {"value": KEY_READ},
            "push": {"env": "E2E_KEY_PUSH"},
            "native": {"value": KEY_NATIVE},
        },
        "native_api": {"allow": ["Feeds_GetFeeds", "Licenses_GetLicenses"]},
        "clients": [
            {
                "name": "ci",
                "tokens": [f"sha256:{token_hash(TOKEN_CI)}"],
                "rules": [
                    {"methods": ["PUT", "POST"], "paths": ["/api/packages/internal/**"], "key": "push"},
                    {"native": ["Feeds_GetFeeds"], "key": "native"},
                    {
                        "paths": [
                            "/__standin/**",
                            "/api/**",
                            "/nuget/**",
                            "/npm/**",
                            "/v2/**",
                            "/endpoints/**",
                            "/upack/**",
                        ],
                        "key": "read",
                    },
                ],
            },
            {
                "name": "reader",
                "tokens": [f"sha256:{token_hash(TOKEN_READER)}"],
                "rules": [{"methods": ["GET", "HEAD"], "key": "read"}],
            },
        ],
        "limits": {"max_rewrite_body_bytes": 65536},
        "shutdown": {
            "drain_delay": 0,
            "timeout": 2,
        },  # tests stop gateways often; test_lifecycle.py times the drain
    }


@dataclass
class Gateway:
    url: str
    admin_url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    standin: Standin
    config_path: Path
    _lines_seen: int = field(default=0)

    def connect(self, admin: bool = False) -> socket.socket:
        """A raw TCP connection to the proxy (or admin) port, for bytes no client library would send."""
        host, port = (self.admin_url if admin else self.url).removeprefix("http://").split(":")
        return socket.create_connection((host, int(port)), timeout=10)

    @property
    def upstream_authority(self) -> str:
        """host:port of the stand-in: the Host every forwarded request carries (no public_url set)."""
        return str(yaml.safe_load(self.config_path.read_text())["upstream"]["url"]).removeprefix("http://")

    def audit_lines(self) -> list[dict[str, Any]]:
        """Every audit line written so far (waits briefly for the last one to be flushed)."""
        lines: list[dict[str, Any]] = []
        text = self.log_path.read_text()
        for raw in text[: text.rfind("\n") + 1].splitlines():  # a line still being written is not read
            if raw.startswith("{"):
                lines.append(json.loads(raw))
        return lines

    def last_audit(
        self, request_id: str | None = None, timeout: float = 3.0, *, after: int | None = None
    ) -> dict[str, Any]:
        """The audit line of ``request_id``; without one, the last line, and with ``after`` (a count of
        ``audit_lines()`` taken before the request) only a line written since: a line is queued after
        the response is sent, so a client can read the log before its own request's line is there."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = self.audit_lines()
            if request_id is None and len(lines) > (after or 0):
                return lines[-1]
            matches = [line for line in lines if line["request_id"] == request_id]
            if matches:
                return matches[-1]
            time.sleep(0.05)
        raise AssertionError(f"no audit line for {request_id}")

    def rss_kib(self) -> int:
        """Peak resident set size of the gateway process (VmHWM), in KiB."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise AssertionError("no VmHWM")


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"gateway exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(url + "/healthz", timeout=0.5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"gateway did not become healthy:\n{log.read_text()}")


def start_gateway(
    tmp: Path,
    standin: Standin,
    upstream_url: str,
    mutate: Any = None,
    *,
    config_file: Path | None = None,
    extra_args: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> Gateway:
    """The real gateway on free ports (or on the ports of ``config_file``, a config written by the test)."""
    if config_file is None:
        config = base_config(upstream_url, free_port(), free_port())
        if mutate is not None:
            mutate(config)
        config_path = tmp / "gateway.yaml"
        config_path.write_text(yaml.safe_dump(config))
    else:
        config_path = config_file
        config = yaml.safe_load(config_file.read_text())
    port, admin_port = config["listen"]["port"], config["admin"]["port"]
    log_path = tmp / "gateway.log"
    env = {**os.environ, "E2E_KEY_PUSH": KEY_PUSH, "PYTHONUNBUFFERED": "1", **(env or {})}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(config_path), *(extra_args or [])],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    gw = Gateway(
        f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}", process, log_path, standin, config_path
    )
    try:
        wait_ready(gw.admin_url, process, log_path)
    except BaseException:
        stop(process)
        raise
    return gw


@contextmanager
def running_gateway(
    tmp: Path, standin: StandinServer, mutate: Any = None, **options: Any
) -> Iterator[Gateway]:
    """A gateway of its own for one test (start_gateway's options), the stand-in's record cleared; stopped
    by its PID afterwards."""
    tmp.mkdir(parents=True, exist_ok=True)
    gw = start_gateway(tmp, standin.standin, standin.url, mutate, **options)
    standin.standin.clear()
    try:
        yield gw
    finally:
        stop(gw.process)


@pytest.fixture(scope="session")
def standin_server() -> Iterator[StandinServer]:
    with StandinServer(Standin(keys={KEY_READ: "read", KEY_PUSH: "push", KEY_NATIVE: "native"})) as server:
        yield server


@pytest.fixture(scope="session")
def gateway_session(
    tmp_path_factory: pytest.TempPathFactory, standin_server: StandinServer
) -> Iterator[Gateway]:
    gw = start_gateway(tmp_path_factory.mktemp("gw"), standin_server.standin, standin_server.url)
    try:
        yield gw
    finally:
        stop(gw.process)


@pytest.fixture
def gateway(gateway_session: Gateway) -> Gateway:
    gateway_session.standin.clear()
    return gateway_session


@pytest.fixture
def client(gateway: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=10, trust_env=False) as c:
        yield c


LOOPS = {"uvloop": uvloop.new_event_loop, "asyncio": asyncio.new_event_loop}
Run = Callable[[Coroutine[Any, Any, Any]], Any]


@pytest.fixture(params=["written at once", "held to the end of the turn"])
def write_modes(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both ways gateway.outbox sends: at once (a quiet loop) and held to the end of the turn (a busy
    one), so every framing, close and backpressure test holds for both."""
    if request.param == "held to the end of the turn":
        write = Outbox.write

        def held(self: Outbox, transport: asyncio.WriteTransport, data: bytes) -> None:
            self._gather = True
            write(self, transport, data)

        monkeypatch.setattr(Outbox, "write", held)


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Run:
    """Run a coroutine on each event loop the gateway runs on: uvloop (the default) and asyncio's own."""
    factory = LOOPS[request.param]

    def runner(coro: Coroutine[Any, Any, Any]) -> Any:
        with asyncio.Runner(loop_factory=factory) as r:
            return r.run(coro)

    return runner
