from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import (
    FramingInvalid,
    GatewayError,
    HeaderInvalid,
    HeadersTooLarge,
    HostInvalid,
    MethodNotAllowed,
)
from gateway.framing import check_head, parser_refusal
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


# --- what the protocol layer refuses as soon as a head is parsed (gateway.server) ---------------------

UPGRADE = [(b"connection", b"Upgrade"), (b"upgrade", b"h2c")]


@pytest.mark.parametrize(
    ("version", "headers", "upgrading"),
    [
        ("1.0", [H, (b"transfer-encoding", b"chunked")], False),
        ("1.0", [H, (b"transfer-encoding", b"identity")], False),
        ("1.1", [H, *UPGRADE, (b"content-length", b"5")], True),
        ("1.1", [H, (b"upgrade", b"h2c"), (b"transfer-encoding", b"chunked")], False),
        ("1.1", [H, (b"connection", b"Upgrade"), (b"upgrade", b"websocket")], True),
        ("1.1", [H, (b"connection", b"Upgrade"), (b"upgrade", b"h2c, websocket")], True),
        ("1.1", [H, *UPGRADE, (b"upgrade", b"h2c")], True),
        ("1.1", [H], True),  # CONNECT: the parser stops after the head
    ],
)
def test_parser_refusals(version: str, headers: list[tuple[bytes, bytes]], upgrading: bool) -> None:
    assert isinstance(parser_refusal(version, headers, upgrading), FramingInvalid)


@pytest.mark.parametrize(
    ("version", "headers", "upgrading"),
    [
        ("1.1", [H, (b"transfer-encoding", b"chunked")], False),
        ("1.0", [H, (b"content-length", b"5")], False),
        ("1.1", [H, *UPGRADE], True),  # answered over HTTP/1.1, then closed
        ("1.1", [H, *UPGRADE, (b"content-length", b"0")], True),
        ("1.1", [H, (b"upgrade", b"websocket")], False),  # not an offer: Upgrade is stripped, request served
    ],
)
def test_parser_accepts(version: str, headers: list[tuple[bytes, bytes]], upgrading: bool) -> None:
    assert parser_refusal(version, headers, upgrading) is None


_names = st.sampled_from([b"upgrade", b"transfer-encoding", b"content-length", b"connection", b"x-a"])
_values = st.sampled_from([b"h2c", b"websocket", b"chunked", b"0", b"7", b"Upgrade", b""])


@given(
    version=st.sampled_from(["1.0", "1.1"]),
    headers=st.lists(st.tuples(_names, _values), max_size=6),
    upgrading=st.booleans(),
)
def test_parser_refusal_never_lets_a_switch_or_a_faulty_framing_through(
    version: str, headers: list[tuple[bytes, bytes]], upgrading: bool
) -> None:
    """Accepted means: the parser keeps reading HTTP, or it stops after a bodiless h2c offer only;
    and an HTTP/1.0 message never carries Transfer-Encoding."""
    if parser_refusal(version, headers, upgrading) is not None:
        return
    names = [name for name, _ in headers]
    if version == "1.0":
        assert b"transfer-encoding" not in names
    if upgrading:
        assert [v for n, v in headers if n == b"upgrade"] == [b"h2c"]
    if b"upgrade" in names:
        assert b"transfer-encoding" not in names
        assert all(v.strip() == b"0" for n, v in headers if n == b"content-length")
