"""An upstream that breaks its answer midway: the client's stream is aborted at once, never left hanging.

ProGet is replaced by a raw socket server that starts a valid answer and then breaks it (a malformed
chunk-size line, or a Content-Length body cut short) and closes. The gateway's read timeout is 6 s in
these tests, so a stream that is only noticed when that timer fires fails the one-second bound.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.standin import Standin
from tests.e2e.conftest import TOKEN_CI, Gateway, start_gateway
from tests.processes import stop

GOOD_CHUNK = b"5\r\nhello\r\n"
ANSWERS = {
    "malformed_chunk": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + GOOD_CHUNK, b"zz\r\n"),
    "truncated_chunk": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + GOOD_CHUNK, b"400\r\nab"),
    "truncated_length": (b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 70000, b"y" * 10),
}
BREAK_AFTER = 0.3  # seconds between the good start and the fault


@dataclass
class RawUpstream:
    """Answers every request with ``start``, waits, sends ``fault`` and closes."""

    answer: tuple[bytes, bytes]
    sock: socket.socket

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            buf = b""
            while b"\r\n\r\n" not in buf:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
            start, fault = self.answer
            conn.sendall(start)
            time.sleep(BREAK_AFTER)
            conn.sendall(fault)


@contextmanager
def gateway_before(answer: tuple[bytes, bytes], tmp_path: Path) -> Iterator[Gateway]:
    sock = socket.create_server(("127.0.0.1", 0))
    upstream = RawUpstream(answer, sock)
    threading.Thread(target=upstream.serve, daemon=True).start()
    gw = start_gateway(tmp_path, Standin(keys={}), upstream.url)
    try:
        yield gw
    finally:
        stop(gw.process)
        sock.close()


@pytest.fixture(params=sorted(ANSWERS))
def broken_gateway(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Gateway]:
    with gateway_before(ANSWERS[request.param], tmp_path) as gw:
        yield gw


def request_id(received: bytes) -> str:
    """The x-request-id of a raw answer (its audit line's key)."""
    head = received.partition(b"\r\n\r\n")[0].decode("latin-1")
    return next(
        line.split(":", 1)[1].strip()
        for line in head.split("\r\n")
        if line.lower().startswith("x-request-id:")
    )


def fetch(gateway: Gateway) -> tuple[bytes, float]:
    """One GET on a raw socket, read until the gateway closes; what arrived and how long it took."""
    host, port = gateway.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"GET /__standin/echo HTTP/1.1\r\nHost: h\r\nX-ApiKey: {TOKEN_CI}\r\nConnection: close\r\n\r\n".encode()
        )
        started = time.monotonic()
        received = b""
        while data := sock.recv(65536):
            received += data
        return received, time.monotonic() - started


def test_a_broken_upstream_body_aborts_the_clients_stream_at_once(broken_gateway: Gateway) -> None:
    received, elapsed = fetch(broken_gateway)
    assert received.startswith(b"HTTP/1.1 200"), received[:200]
    head, _, body = received.partition(b"\r\n\r\n")
    # Closed before the body's end, so the client knows it is incomplete: no terminating chunk, or
    # fewer bytes than the Content-Length it was promised.
    length = [line for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:")]
    if length:
        assert len(body) < int(length[0].split(b":")[1]), len(body)
    else:
        assert b"transfer-encoding: chunked" in head.lower()
        assert not body.endswith(b"0\r\n\r\n")
    assert elapsed < BREAK_AFTER + 1.0, elapsed
    assert broken_gateway.last_audit(request_id(head))["reason"] == "upstream_aborted"


def test_a_body_that_ends_when_proget_closes_is_not_an_abort(tmp_path: Path) -> None:
    """Control: a close-delimited answer (no length, no chunking) ends at EOF; the watch that notices a
    closed connection must not take that EOF for a fault, even after a pause longer than its period."""
    answer = (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"a" * 70000, b"b" * 1000)
    with gateway_before(answer, tmp_path) as gw:
        received, _ = fetch(gw)
        _, _, body = received.partition(b"\r\n\r\n")
        assert received.startswith(b"HTTP/1.1 200"), received[:200]
        assert body.endswith(b"0\r\n\r\n")  # re-chunked by the gateway, terminated
        assert gw.last_audit(request_id(received))["reason"].startswith("rule:")
