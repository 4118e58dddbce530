"""What a new operator hit, as real processes (issue 10): the idle keep-alive timeout is a setting,
``bytes_in`` counts what was relayed to ProGet, and the stand-in documents every flag."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from gateway.standin import StandinServer
from tests.e2e.conftest import TOKEN_CI, TOKEN_READER, Gateway, running_gateway


def test_idle_keep_alive_timeout_is_a_setting(tmp_path: Path, standin_server: StandinServer) -> None:
    with (
        running_gateway(tmp_path, standin_server, lambda c: c["listen"].update(keep_alive_timeout=0.5)) as gw,
        gw.connect() as sock,
    ):
        sock.settimeout(5)
        sock.sendall(
            f"GET /api/management/feeds/list HTTP/1.1\r\nHost: gw\r\nX-ApiKey: {TOKEN_CI}\r\n\r\n".encode()
        )
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        assert sock.recv(65536) == b""  # closed by the gateway, not by us
        assert 0.3 < time.monotonic() - started < 3  # the default would be 5 s


def test_a_busy_kept_alive_connection_outlives_its_timeouts_then_idles_out(
    tmp_path: Path, standin_server: StandinServer
) -> None:
    """Requests every 0.1 s for longer than both the keep-alive and the head timeout keep the
    connection (each request moves its deadline later: gateway/deadline.py); idle, it closes on time."""
    with (
        running_gateway(
            tmp_path,
            standin_server,
            lambda c: (c["listen"].update(keep_alive_timeout=0.5), c["limits"].update(head_timeout=0.5)),
        ) as gw,
        gw.connect() as sock,
    ):
        sock.settimeout(5)
        request = f"GET /api/management/feeds/list HTTP/1.1\r\nHost: gw\r\nX-ApiKey: {TOKEN_CI}\r\n\r\n"
        for _ in range(15):
            sock.sendall(request.encode())
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            time.sleep(0.1)
        started = time.monotonic()
        assert sock.recv(65536) == b""  # closed by the gateway, not by us
        assert 0.3 < time.monotonic() - started < 3


def _post_native(gw: Gateway, token: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        gw.url + "/api/json/Feeds_GetFeeds",
        content=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "X-ApiKey": token},
        timeout=10,
    )


def test_bytes_in_counts_what_was_relayed_to_proget(gateway: Gateway) -> None:
    sent = {"API_Key": TOKEN_CI, "Feed_Name": "internal", "padding": "p" * 200}
    allowed = _post_native(gateway, TOKEN_CI, sent)
    assert allowed.status_code == 200
    (rec,) = gateway.standin.requests
    line = gateway.last_audit(allowed.headers["x-request-id"])
    assert line["bytes_in"] == rec.body_size  # the body as forwarded, the credential stripped
    assert line["bytes_in"] < len(json.dumps(sent))
    refused = _post_native(gateway, TOKEN_READER, {"Feed_Name": "internal", "padding": "p" * 200})
    assert refused.status_code == 403  # the body was read to decide, never relayed
    assert gateway.last_audit(refused.headers["x-request-id"])["bytes_in"] == 0


def test_standin_documents_every_flag() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway.standin", "--help"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    for flag in ("--port PORT", "--port-file PORT_FILE", "--key KEY"):
        (line,) = [line for line in lines if line.strip().startswith(flag)]
        described = line.strip().removeprefix(flag).strip() or lines[lines.index(line) + 1].strip()
        assert len(described) > 10, flag
    assert "not ProGet" in done.stdout
