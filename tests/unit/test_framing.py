from __future__ import annotations

import pytest

from gateway.errors import (
    FramingInvalid,
    GatewayError,
    HeaderInvalid,
    HeadersTooLarge,
    HostInvalid,
    MethodNotAllowed,
)
from gateway.framing import check_head
from gateway.settings import Limits

LIMITS = Limits()
H = (b"host", b"gw.example:8080")


def test_plain_head() -> None:
    head = check_head("PUT", [H, (b"content-length", b"12"), (b"content-type", b"application/json")], LIMITS)
    assert (head.content_length, head.chunked, head.host, head.content_type) == (
        12,
        False,
        "gw.example:8080",
        b"application/json",
    )
    assert head.has_body


def test_chunked_head() -> None:
    head = check_head("POST", [H, (b"transfer-encoding", b"Chunked")], LIMITS)
    assert head.chunked and head.content_length is None and head.has_body


@pytest.mark.parametrize(
    ("method", "headers", "error"),
    [
        ("PROPFIND", [H], MethodNotAllowed),
        ("CONNECT", [H], MethodNotAllowed),
        ("get", [H], MethodNotAllowed),
        ("POST", [H, (b"content-length", b"5"), (b"transfer-encoding", b"chunked")], FramingInvalid),
        ("POST", [H, (b"content-length", b"5"), (b"content-length", b"5")], FramingInvalid),
        ("POST", [H, (b"content-length", b"5, 5")], FramingInvalid),
        ("POST", [H, (b"content-length", b"-1")], FramingInvalid),
        ("POST", [H, (b"content-length", b"0x10")], FramingInvalid),
        ("POST", [H, (b"transfer-encoding", b"gzip, chunked")], FramingInvalid),
        ("POST", [H, (b"transfer-encoding", b"chunked"), (b"transfer-encoding", b"chunked")], FramingInvalid),
        ("GET", [], HostInvalid),
        ("GET", [H, H], HostInvalid),
        ("GET", [(b"host", b"evil.example/path")], HostInvalid),
        ("GET", [(b"host", b"a b")], HostInvalid),
        ("GET", [(b"host", b"user@evil")], HostInvalid),
        ("POST", [H, (b"content-type", b"a/b"), (b"content-type", b"c/d")], HeaderInvalid),
        ("GET", [H] + [(b"x-a", b"1")] * 100, HeadersTooLarge),
        ("GET", [H, (b"x-big", b"v" * 40000)], HeadersTooLarge),
    ],
)
def test_refusals(method: str, headers: list[tuple[bytes, bytes]], error: type[GatewayError]) -> None:
    with pytest.raises(error):
        check_head(method, headers, LIMITS)


@pytest.mark.parametrize("host", [b"localhost", b"127.0.0.1:8080", b"[::1]:8080", b"proget-gw.corp.example"])
def test_hosts_accepted(host: bytes) -> None:
    assert check_head("GET", [(b"host", host)], LIMITS).host == host.decode()


@pytest.mark.parametrize(
    "connection",
    [
        [(b"connection", b"Content-Type")],
        [(b"connection", b"keep-alive, content-length")],
        [(b"connection", b"close"), (b"connection", b" \tTransfer-Encoding\t ")],
        [(b"connection", b"HOST")],
        [(b"Connection", b"upgrade,content-encoding")],
    ],
)
def test_connection_cannot_drop_a_header_the_decision_used(connection: list[tuple[bytes, bytes]]) -> None:
    headers = [H, (b"content-type", b"text/plain"), (b"content-length", b"2"), *connection]
    with pytest.raises(HeaderInvalid):
        check_head("POST", headers, LIMITS)


def test_connection_may_name_other_headers() -> None:
    headers = [H, (b"connection", b"keep-alive, Upgrade, HTTP2-Settings, x-hop"), (b"x-hop", b"1")]
    assert check_head("GET", headers, LIMITS).host == "gw.example:8080"
