"""Request head checks: method, header budget, message framing and Host, before anything is read.

httptools (llhttp, strict, under gateway.http1) already refuses most malformed framing (obs-fold,
bare LF, duplicate lengths); these checks restate the rules in the app so that the gateway's
guarantee does not depend on the parser, and give each refusal a stable code.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import NamedTuple

from gateway.errors import (
    FramingInvalid,
    GatewayError,
    HeaderInvalid,
    HeadersTooLarge,
    HostInvalid,
    MethodNotAllowed,
)
from gateway.settings import DECISION_HEADERS, HTTP_METHODS, Limits

_METHODS = frozenset(HTTP_METHODS)
# Naming one of these in Connection makes it hop-by-hop: it would be dropped on the way to ProGet, which
# would then read the request differently from how the gateway checked it.
_DECISION_HEADERS = frozenset(h.encode("ascii") for h in DECISION_HEADERS)
_DIGITS = re.compile(rb"[0-9]{1,19}")
_HOST = re.compile(
    rb"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?"
)


class Head(NamedTuple):
    """What the framing says about the body, plus the few headers every later stage needs."""

    content_length: int | None  # None when chunked or absent
    chunked: bool
    host: str
    content_type: bytes | None
    content_encoding: bytes | None

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)


def parser_refusal(
    http_version: str, headers: list[tuple[bytes, bytes]], upgrading: bool
) -> GatewayError | None:
    """What the protocol layer refuses as soon as the head is parsed, before any app sees the request.

    ``upgrading`` is the parser's own verdict that the connection would switch protocols after this
    head (``Connection: upgrade`` + ``Upgrade``, or CONNECT): the parser stops reading HTTP there, so
    only an h2c offer without a body is served (over HTTP/1.1, then closed); every other upgrade is
    refused here, so a request is never both refused and forwarded.
    """
    if http_version == "1.0" and any(name == b"transfer-encoding" for name, _ in headers):
        return FramingInvalid("An HTTP/1.0 request cannot carry Transfer-Encoding (RFC 9112 6.1).")
    upgrade = [value.strip().lower() for name, value in headers if name == b"upgrade"]
    if upgrade and _has_body(headers):
        # The parser treats an Upgrade request as ending at its head: its body would reach ProGet's
        # pooled connection as the start of another request (smuggling).
        return FramingInvalid("An Upgrade offer with a request body is not accepted.")
    if upgrading and upgrade != [b"h2c"]:
        return FramingInvalid("Protocol upgrades are not supported.")
    return None


def _has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(
        name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0")
        for name, value in headers
    )


def check_head(method: str, headers: list[tuple[bytes, bytes]], limits: Limits) -> Head:
    """Refuse what could be framed two ways; return the head summary."""
    if method not in _METHODS:
        raise MethodNotAllowed(f"Method {method[:16]!r} is not accepted.")
    _check_budget(headers, limits)
    _check_connection(headers)
    single: dict[bytes, bytes] = {}
    seen_te = False
    for name, value in headers:
        if name == b"transfer-encoding":
            if seen_te or value.strip().lower() != b"chunked":
                raise FramingInvalid("Transfer-Encoding must be a single 'chunked'.")
            seen_te = True
        elif name in (b"content-length", b"host", b"content-type", b"content-encoding"):
            if name in single:
                raise _repeated(name)
            single[name] = value
    length = _content_length(single.get(b"content-length"))
    if seen_te and length is not None:
        raise FramingInvalid("Content-Length and Transfer-Encoding together are refused.")
    return Head(
        content_length=length,
        chunked=seen_te,
        host=_host(single.get(b"host")),
        content_type=single.get(b"content-type"),
        content_encoding=single.get(b"content-encoding"),
    )


def _check_budget(headers: list[tuple[bytes, bytes]], limits: Limits) -> None:
    if len(headers) > limits.max_header_count:
        raise HeadersTooLarge(f"More than {limits.max_header_count} headers.")
    if sum(len(n) + len(v) + 4 for n, v in headers) > limits.max_header_bytes:
        raise HeadersTooLarge(f"Headers larger than {limits.max_header_bytes} bytes.")


def connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """The headers a Connection header names: hop-by-hop too (RFC 9110 7.6.1), never passed on."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if len(name) == 10 and name.lower() == b"connection":  # the length first: no copy per header
            tokens.update(token.strip().lower() for token in value.split(b","))
    return frozenset(tokens) if tokens else _NOTHING_NAMED


_NOTHING_NAMED: frozenset[bytes] = frozenset()


def _check_connection(headers: list[tuple[bytes, bytes]]) -> None:
    named = connection_tokens(headers) & _DECISION_HEADERS
    if named:
        listed = ", ".join(sorted(n.decode() for n in named))
        raise HeaderInvalid(f"Connection names {listed}, which the gateway must forward as checked.")


def _repeated(name: bytes) -> FramingInvalid | HostInvalid | HeaderInvalid:
    if name == b"content-length":
        return FramingInvalid("Content-Length is repeated.")
    if name == b"host":
        return HostInvalid("Host is repeated.")
    return HeaderInvalid(f"{name.decode()} is repeated.")


def _content_length(value: bytes | None) -> int | None:
    if value is None:
        return None
    if not _DIGITS.fullmatch(value.strip()):
        raise FramingInvalid("Content-Length is not a single non-negative integer.")
    return int(value)


def _host(value: bytes | None) -> str:
    if value is None or not _HOST.fullmatch(value):
        raise HostInvalid()
    return value.decode("ascii")
