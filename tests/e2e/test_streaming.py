"""Multi-GB bodies through real sockets, in constant memory (gateway RSS measured, not assumed).

curl is the client (a separate process, as in real use); the stand-in generates and consumes the
bytes; the gateway runs as its own process, so VmHWM is the gateway's own peak.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.standin import StandinServer
from tests.e2e.conftest import TOKEN_CI, Gateway, start_gateway
from tests.processes import stop

GIB = 1024**3
SIZE = 2 * GIB
RSS_LIMIT_KIB = 150 * 1024


def curl(*args: str) -> str:
    if shutil.which("curl") is None:
        raise AssertionError("curl is required (installed by .ci/run)")
    done = subprocess.run(
        ["curl", "-sS", "--fail", "-H", f"X-ApiKey: {TOKEN_CI}", *args], capture_output=True, check=True
    )
    return done.stdout.decode()


@pytest.mark.slow
def test_two_gib_download_streams(gateway: Gateway) -> None:
    url = f"{gateway.url}/api/packages/internal/download?name=big&version=1&size={SIZE}"
    out = curl("-o", "/dev/null", "-w", "%{size_download} %{http_code}", url)
    assert out == f"{SIZE} 200"
    assert gateway.rss_kib() < RSS_LIMIT_KIB, f"gateway peak RSS {gateway.rss_kib()} KiB"


@pytest.mark.slow
def test_two_gib_upload_streams(gateway: Gateway, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    with big.open("wb") as f:
        f.truncate(SIZE)  # sparse: costs no disk, reads as zeros
    out = curl("-T", str(big), "-w", "\n%{http_code}", f"{gateway.url}/api/packages/internal/upload")
    body, status = out.rsplit("\n", 1)
    assert status == "201"
    assert f'"size": {SIZE}' in body or f'"size":{SIZE}' in body
    assert gateway.rss_kib() < RSS_LIMIT_KIB, f"gateway peak RSS {gateway.rss_kib()} KiB"


def test_client_disconnect_cancels_upstream_download(gateway: Gateway) -> None:
    before, lines = gateway.standin.cancelled, len(gateway.audit_lines())
    with (
        httpx.Client(timeout=10) as client,
        client.stream(
            "GET", f"{gateway.url}/__standin/download-slow?size=50000000", headers={"X-ApiKey": TOKEN_CI}
        ) as response,
    ):
        assert response.status_code == 200
        next(response.iter_raw())
    deadline = time.monotonic() + 10
    while gateway.standin.cancelled == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gateway.standin.cancelled == before + 1
    audit = gateway.last_audit(after=lines)
    assert audit["reason"] == "client_aborted"


def test_client_disconnect_cancels_upstream_upload(gateway: Gateway) -> None:
    import socket

    before = gateway.standin.cancelled
    host, port = gateway.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            f"PUT /__standin/sink HTTP/1.1\r\nHost: {host}:{port}\r\nX-ApiKey: {TOKEN_CI}\r\n"
            "Content-Length: 100000000\r\n\r\n".encode()
            + os.urandom(200_000)
        )
        time.sleep(0.5)
    deadline = time.monotonic() + 10
    while gateway.standin.cancelled == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gateway.standin.cancelled == before + 1


def test_read_timeout_counts_from_the_end_of_the_upload(
    tmp_path: Path, standin_server: StandinServer
) -> None:
    """``timeouts.read`` is ProGet's time to answer, not the upload's duration; it must hold on a pooled
    connection whose previous download was slowed by a slow reader (aiohttp's sock_read did not)."""

    def one_second(config: dict[str, Any]) -> None:
        config["upstream"]["timeouts"]["read"] = 1

    gw = start_gateway(tmp_path, standin_server.standin, standin_server.url, mutate=one_second)
    auth = {"X-ApiKey": TOKEN_CI}
    try:
        url = f"{gw.url}/api/packages/internal/download?size=40000000"
        with httpx.Client(timeout=10) as client, client.stream("GET", url, headers=auth) as response:
            for _ in response.iter_raw(65536):
                time.sleep(0.001)  # backpressure: the gateway pauses reading ProGet's body

        def paced() -> Iterator[bytes]:  # 2 s of upload, twice the read timeout
            for _ in range(40):
                time.sleep(0.05)
                yield b"u" * 1_000_000

        upload = httpx.put(
            f"{gw.url}/api/packages/internal/upload", headers=auth, content=paced(), timeout=20
        )
        assert upload.status_code == 201, upload.text
        # the upload outlasted the read timeout
        assert gw.last_audit(upload.headers["x-request-id"])["duration_ms"] > 1500
        slow = httpx.get(f"{gw.url}/__standin/slow?seconds=3", headers=auth, timeout=10)
        assert slow.status_code == 504  # ...which still applies to ProGet's answer
    finally:
        stop(gw.process)


def test_write_timeout_cuts_off_a_stalled_upstream(tmp_path: Path, standin_server: StandinServer) -> None:
    """An upstream that stops taking an upload is cut off after ``timeouts.write``: 504, not a hang."""

    def one_second_writes(config: dict[str, Any]) -> None:
        config["upstream"]["timeouts"]["write"] = 1

    gw = start_gateway(tmp_path, standin_server.standin, standin_server.url, mutate=one_second_writes)
    try:
        started = time.monotonic()
        response = httpx.put(
            f"{gw.url}/__standin/stall?seconds=8",
            headers={"X-ApiKey": TOKEN_CI},
            content=b"x" * 64_000_000,
            timeout=20,
        )
        assert response.status_code == 504
        assert response.headers["x-gateway-error"] == "upstream_timeout"
        assert time.monotonic() - started < 6  # cut off by the 1 s write timeout, not by the stall's end
    finally:
        stop(gw.process)
