"""The protocol layer against raw sockets: one outcome per request, framing as RFC 9112 says, and a
deadline or a byte budget for every state a connection can be in (issue 8, sections 5 and 8).

Each test drives the real gateway process in front of the recording stand-in; the memory tests read
the gateway's resident set from /proc.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.standin import _BLOCK, StandinServer
from tests.e2e.conftest import TOKEN_CI, Gateway, running_gateway

HEAD_TIMEOUT = 1.0  # the strict gateway's head deadline; its linger after an early answer is the same
MiB = 1024 * 1024


def read_until_close(sock: socket.socket, within: float = 10.0) -> bytes:
    sock.settimeout(within)
    received = b""
    while data := sock.recv(65536):
        received += data
    return received


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Does the gateway close this connection within ``seconds`` (whatever it sends first)?"""
    deadline = time.monotonic() + seconds
    try:
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            if not sock.recv(65536):
                return True
    except TimeoutError:
        return False
    except OSError:
        return True  # reset: closed too
    return False


def new_audit_lines(gateway: Gateway, before: int, settle: float = 0.5) -> list[dict[str, Any]]:
    time.sleep(settle)
    return gateway.audit_lines()[before:]


def rss_kib(gateway: Gateway) -> int:
    """Resident set size now (VmRSS), in KiB."""
    for line in Path(f"/proc/{gateway.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture
def strict_gateway(tmp_path: Path, standin_server: StandinServer) -> Iterator[Gateway]:
    """A gateway of its own (so its memory is this test's) with one-second deadlines."""

    def deadlines(config: dict[str, Any]) -> None:
        config["limits"].update(head_timeout=HEAD_TIMEOUT, body_timeout=HEAD_TIMEOUT)

    with running_gateway(tmp_path, standin_server, mutate=deadlines) as gw:
        yield gw


# --- section 5: one outcome per request, framing as RFC 9112 says -------------------------------------


def test_http10_with_transfer_encoding_is_refused(gateway: Gateway) -> None:
    """RFC 9112 6.1: Transfer-Encoding in an HTTP/1.0 message is faulty framing."""
    with gateway.connect() as sock:
        sock.sendall(
            f"POST /__standin/echo HTTP/1.0\r\nHost: h\r\nX-ApiKey: {TOKEN_CI}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".encode()
        )
        reply = read_until_close(sock)
    assert reply.startswith(b"HTTP/1.1 400"), reply[:200]
    assert b"x-gateway-error: framing_invalid" in reply.lower()
    time.sleep(0.2)
    assert gateway.standin.requests == []


@pytest.mark.parametrize("protocol", ["websocket", "WebSocket", "h2c, websocket", "TLS/1.2"])
def test_an_upgrade_is_refused_or_forwarded_never_both(gateway: Gateway, protocol: str) -> None:
    before = len(gateway.audit_lines())
    with gateway.connect() as sock:
        sock.sendall(
            f"GET /__standin/echo HTTP/1.1\r\nHost: h\r\nX-ApiKey: {TOKEN_CI}\r\n"
            f"Connection: Upgrade\r\nUpgrade: {protocol}\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode()
        )
        reply = read_until_close(sock)
    assert reply.count(b"HTTP/1.1 ") == 1, reply
    assert reply.startswith(b"HTTP/1.1 400"), reply[:200]
    lines = new_audit_lines(gateway, before)
    # ProGet saw nothing, and the one audit line says so.
    assert gateway.standin.requests == []
    assert [(line["decision"], line["reason"]) for line in lines] == [("deny", "framing_invalid")]


def test_a_pipelined_unfinished_head_never_writes_into_a_streaming_response(
    strict_gateway: Gateway,
) -> None:
    """The next request's head stalls while a ~2.5 s download streams: its deadline (1 s) passes
    mid-stream. The download still arrives whole and clean; the connection closes after it."""
    size = 16_000_000
    before = len(strict_gateway.audit_lines())
    with strict_gateway.connect() as sock:
        sock.sendall(
            f"GET /__standin/download-slow?size={size} HTTP/1.1\r\nHost: h\r\nX-ApiKey: {TOKEN_CI}\r\n\r\n"
            "GET /__standin/echo HTTP/1.1\r\nHost: h\r\n".encode()
        )
        reply = read_until_close(sock, within=20)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert f"content-length: {size}".encode() in head.lower()
    assert len(body) == size, len(body)  # nothing more, nothing less
    assert b"HTTP/1.1" not in body
    piece = _BLOCK[:65536]  # download-slow sends this piece again and again
    assert body == (piece * (size // len(piece) + 1))[:size]
    lines = new_audit_lines(strict_gateway, before)
    assert sorted(line["reason"] for line in lines) == ["request_timeout", "rule:2"]


def test_a_pipelined_malformed_request_never_writes_into_a_streaming_response(gateway: Gateway) -> None:
    size = 4_000_000
    with gateway.connect() as sock:
        sock.sendall(
            f"GET /__standin/download-slow?size={size} HTTP/1.1\r\nHost: h\r\nX-ApiKey: {TOKEN_CI}\r\n\r\n".encode()
        )
        time.sleep(0.2)  # the download is streaming
        sock.sendall(b"GET /x HTTP/1.1\r\nHost: h\r\nBad Header\r\n\r\n")
        reply = read_until_close(sock, within=20)
    _, _, body = reply.partition(b"\r\n\r\n")
    assert len(body) == size and b"HTTP/1.1" not in body


# --- section 8: byte budgets and deadlines, no credential needed to test them -------------------------

STRANGER_CHUNKED = (
    b"POST /api/packages/internal/upload HTTP/1.1\r\nHost: h\r\nX-ApiKey: pgw_stranger\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Trailer: "
)


def flood(sock: socket.socket, total: int) -> int:
    """Send up to ``total`` bytes of one endless header line; how many were accepted before the
    gateway closed the connection."""
    sent = 0
    block = b"a" * 65536
    try:
        while sent < total:
            sock.sendall(block)
            sent += len(block)
    except OSError:
        pass
    return sent


@pytest.mark.parametrize("admin", [False, True])
def test_an_endless_trailer_after_an_early_refusal_is_never_held(
    strict_gateway: Gateway, admin: bool
) -> None:
    """An early 401 (proxy) or an answer that ignores the body (admin /healthz), then 48 MiB of one
    trailer line: the gateway holds none of it and closes the connection within its linger time."""
    start = (
        STRANGER_CHUNKED
        if not admin
        else STRANGER_CHUNKED.replace(b"/api/packages/internal/upload", b"/healthz")
    )
    rss_before = rss_kib(strict_gateway)
    with strict_gateway.connect(admin=admin) as sock:
        sock.sendall(start)
        started = time.monotonic()
        sent = flood(sock, 48 * MiB)
        took = time.monotonic() - started
        rss_during = rss_kib(strict_gateway)
        closed = closed_within(sock, 2 * HEAD_TIMEOUT)
    assert closed, f"still open after {took:.1f} s and {sent} bytes"
    assert rss_during - rss_before < 8 * 1024, (rss_before, rss_during)
    assert strict_gateway.standin.requests == []


def test_an_endless_trailer_on_a_body_being_read_is_cut_off(strict_gateway: Gateway) -> None:
    """The body is read (an inspected route, a known client); its trailer never ends: refused past
    the trailer budget, nothing forwarded, memory flat."""
    rss_before = rss_kib(strict_gateway)
    with strict_gateway.connect() as sock:
        sock.sendall(
            f"POST /api/json/Feeds_GetFeeds HTTP/1.1\r\nHost: h\r\nX-ApiKey: {TOKEN_CI}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n"
            "9\r\nFeed_Id=1\r\n0\r\nX-Trailer: ".encode()
        )
        time.sleep(0.2)
        sent = flood(sock, 48 * MiB)
        rss_during = rss_kib(strict_gateway)
        closed = closed_within(sock, HEAD_TIMEOUT)
    assert closed and sent < 8 * MiB, sent
    assert rss_during - rss_before < 8 * 1024, (rss_before, rss_during)
    assert strict_gateway.standin.requests == []


def test_a_legitimate_trailer_still_works(gateway: Gateway) -> None:
    with gateway.connect() as sock:
        sock.sendall(
            f"POST /__standin/echo HTTP/1.1\r\nHost: h\r\nX-ApiKey: {TOKEN_CI}\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n".encode()
        )
        time.sleep(0.2)
        sock.sendall(b"X-Checksum: " + b"c" * 4000 + b"\r\n\r\n")
        reply = read_until_close(sock)
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    (rec,) = gateway.standin.requests
    assert rec.body_head == b"hello"


def test_parked_connections_after_an_early_refusal_are_closed(strict_gateway: Gateway) -> None:
    """200 strangers each get an early 401, send one more byte and wait: all are closed within the
    linger deadline (before the fix none was, ever)."""
    socks = [strict_gateway.connect() for _ in range(200)]
    try:
        for sock in socks:
            sock.sendall(
                b"POST /api/json/Feeds_GetFeeds HTTP/1.1\r\nHost: h\r\nX-ApiKey: pgw_stranger\r\n"
                b"Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{"
            )
        for sock in socks:
            sock.settimeout(5)
            assert sock.recv(65536).startswith(b"HTTP/1.1 401")
            sock.sendall(b"x")
        started = time.monotonic()
        still_open = [sock for sock in socks if not closed_within(sock, 3 * HEAD_TIMEOUT)]
        assert still_open == [], f"{len(still_open)} still open after {time.monotonic() - started:.1f} s"
    finally:
        for sock in socks:
            sock.close()


def test_an_idle_kept_alive_connection_sending_only_line_breaks_is_closed(strict_gateway: Gateway) -> None:
    """Line breaks between requests start no request but stop the keep-alive timer (once uvicorn's):
    the head deadline still closes the connection."""
    with strict_gateway.connect() as sock:
        sock.sendall(f"GET /__standin/echo HTTP/1.1\r\nHost: h\r\nX-ApiKey: {TOKEN_CI}\r\n\r\n".encode())
        sock.settimeout(5)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        closed = False
        while not closed and time.monotonic() - started < 4 * HEAD_TIMEOUT:
            try:
                sock.sendall(b"\r\n")
            except OSError:
                break
            closed = closed_within(sock, 0.3 * HEAD_TIMEOUT)
        took = time.monotonic() - started
    assert took < 2 * HEAD_TIMEOUT, took
