"""Regressions for attacks found by reviewing the running gateway; each one once reached ProGet."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.standin import StandinServer
from tests.e2e.conftest import (
    KEY_NATIVE,
    KEY_READ,
    TOKEN_CI,
    TOKEN_READER,
    Gateway,
    running_gateway,
)
from tests.e2e.rawhttp import request, send_raw

STOLEN = "STOLEN-proget-key-0000"


def test_upgrade_offer_with_a_body_is_refused(gateway: Gateway) -> None:
    """The parser ends an Upgrade request at its head: its body would become a second request on
    ProGet's pooled connection (a blocked Native API call, keyless or with a stolen key)."""
    smuggled = b"GET /api/json/Users_CreateOrUpdateUser HTTP/1.1\r\nHost: p\r\nContent-Length: 0\r\n\r\n"
    head = (
        f"GET /__standin/echo HTTP/1.1\r\nHost: h\r\nX-ApiKey: {TOKEN_READER}\r\n"
        f"Connection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: {len(smuggled)}\r\n\r\n"
    )
    response = send_raw(gateway.url, head.encode() + smuggled)
    assert response.status == 400
    assert response.header("x-gateway-error") == ["framing_invalid"]
    time.sleep(0.2)
    assert gateway.standin.requests == []


def test_upgrade_offer_without_a_body_is_answered_over_http1(gateway: Gateway) -> None:
    """curl (cargo) offers h2c on plain http: ignoring the offer is allowed, refusing it breaks them."""
    response = request(
        gateway.url,
        "GET",
        "/__standin/echo",
        [
            ("X-ApiKey", TOKEN_CI),
            ("Connection", "Upgrade, HTTP2-Settings"),
            ("Upgrade", "h2c"),
            ("HTTP2-Settings", "AAMAAABkAAQCAAAAAAIAAAAA"),
        ],
    )
    assert response.status == 200
    (rec,) = gateway.standin.requests
    assert rec.header("upgrade") == [] and rec.header("http2-settings") == []


def test_host_is_never_the_clients(gateway: Gateway) -> None:
    """Behind a load balancer that routes by Host, a client-chosen Host would send the key elsewhere."""
    response = request(gateway.url, "GET", "/__standin/echo", [("X-ApiKey", TOKEN_CI)], b"")
    assert response.status == 200
    (rec,) = gateway.standin.requests
    assert rec.header("host") == [gateway.upstream_authority]
    gateway.standin.clear()
    raw = f"GET /__standin/echo HTTP/1.1\r\nHost: wiki.internal\r\nX-ApiKey: {TOKEN_CI}\r\nConnection: close\r\n\r\n"
    assert send_raw(gateway.url, raw.encode()).status == 200
    (rec,) = gateway.standin.requests
    assert rec.header("host") == [gateway.upstream_authority]
    assert rec.header("x-forwarded-host") == ["wiki.internal"]  # information for ProGet's links only


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json; x=x-www-form-urlencoded",
        "Application/JSON ;charset=utf-8",
        "application/vnd.x+json",
    ],
)
def test_media_type_is_parsed_not_searched(gateway: Gateway, content_type: str) -> None:
    body = f'{{"API_Key":"{STOLEN}","Feed_Id":1}}'.encode()
    response = request(
        gateway.url,
        "POST",
        "/api/json/Feeds_GetFeeds",
        [("X-ApiKey", TOKEN_CI), ("Content-Type", content_type)],
        body,
    )
    # The body carried a second, different credential: ambiguous, refused, never forwarded.
    assert response.header("x-gateway-error") == ["credential_ambiguous"]
    assert gateway.standin.requests == []


def test_trailers_never_become_forwarded_headers(gateway: Gateway) -> None:
    with gateway.connect() as sock:
        sock.sendall(
            f"POST /api/json/Feeds_GetFeeds HTTP/1.1\r\nHost: h\r\nX-ApiKey: {TOKEN_CI}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        time.sleep(0.3)
        chunk = b"Feed_Id=1"
        sock.sendall(
            b"%x\r\n%s\r\n0\r\nContent-Type: application/json\r\nX-Original-URL: /x\r\n\r\n"
            % (len(chunk), chunk)
        )
        reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    (rec,) = gateway.standin.requests
    assert rec.header("content-type") == ["application/x-www-form-urlencoded"]
    assert rec.header("x-original-url") == []
    assert rec.body_head == chunk


@pytest.mark.parametrize(
    "target",
    [
        f"/api/json/Feeds_GetFeeds?%u006Bey={STOLEN}",
        f"/api/json/Feeds_GetFeeds?API%u005FKey={STOLEN}",
        f"/__standin/echo?a=1&k%ey={STOLEN}",
    ],
)
def test_odd_escapes_in_parameter_names_are_refused(gateway: Gateway, target: str) -> None:
    response = request(gateway.url, "GET", target, [("X-ApiKey", TOKEN_CI)])
    assert response.header("x-gateway-error") == ["query_invalid"]
    assert gateway.standin.requests == []


def test_odd_escapes_in_form_names_are_refused(gateway: Gateway) -> None:
    response = request(
        gateway.url,
        "POST",
        "/api/json/Feeds_GetFeeds",
        [("X-ApiKey", TOKEN_CI), ("Content-Type", "application/x-www-form-urlencoded")],
        f"%u006Bey={STOLEN}".encode(),
    )
    assert response.header("x-gateway-error") == ["body_unparseable"]
    assert gateway.standin.requests == []


@pytest.mark.parametrize(
    ("target", "content_type", "body", "forwarded"),
    [
        ("/endpoints/dir/metadata/file.txt", "application/json", b'{"API_Key":"%s","a":1}', b'{"a":1}'),
        ("/endpoints/dir/dir/newdir", "application/x-www-form-urlencoded", b"key=%s&a=1", b"a=1"),
        ("/upack/internal/import", "application/json", b'{"a":1,"API_Key":"%s"}', b'{"a":1}'),
    ],
)
def test_asset_and_universal_apis_are_scanned(
    gateway: Gateway, target: str, content_type: str, body: bytes, forwarded: bytes
) -> None:
    payload = body.replace(b"%s", TOKEN_CI.encode())
    response = request(gateway.url, "POST", target, [("Content-Type", content_type)], payload)
    assert response.status != 400, response.body
    (rec,) = gateway.standin.requests
    assert rec.body_head == forwarded
    assert rec.header("x-apikey") == [KEY_READ]


def test_query_values_never_reach_the_audit_line(gateway: Gateway) -> None:
    response = request(
        gateway.url, "GET", f"/__standin/echo?token={TOKEN_READER}&b", [("X-ApiKey", TOKEN_CI)]
    )
    assert response.status == 200
    audit = gateway.last_audit(response.header("x-request-id")[0])
    assert audit["path"] == "/__standin/echo?token=...&b"  # apikey= is refused now: test_ambiguity.py
    assert TOKEN_READER not in gateway.log_path.read_text()


def test_a_body_shorter_than_declared_never_reaches_proget_as_complete(gateway: Gateway) -> None:
    """A client that stops sending mid-body: ProGet's connection is dropped, not left waiting for bytes
    that the next request would supply."""
    lines = len(gateway.audit_lines())
    with gateway.connect() as sock:
        sock.sendall(
            f"PUT /api/packages/internal/upload HTTP/1.1\r\nHost: h\r\nX-ApiKey: {TOKEN_CI}\r\n"
            "Content-Length: 1000000\r\n\r\n".encode()
            + b"x" * 1000
        )
        time.sleep(0.3)
    audit = gateway.last_audit(timeout=5, after=lines)
    assert (audit["method"], audit["reason"]) == ("PUT", "client_aborted")
    for rec in gateway.standin.requests:
        assert rec.body_size < 1000000
    assert KEY_NATIVE not in gateway.log_path.read_text()


# --- second review -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "code"),
    [
        ("application /x-www-form-urlencoded", "credential_ambiguous"),  # ASP.NET Core trims around '/'
        ("application\t/\tx-www-form-urlencoded", "credential_ambiguous"),
        ("application/x-www-form-urlencodedX", "credential_ambiguous"),  # System.Web tests a prefix
        ("application/x-www-form-urlencoded, text/plain", "content_type_not_allowed"),
    ],
)
def test_form_media_type_is_read_as_leniently_as_proget(
    gateway: Gateway, content_type: str, code: str
) -> None:
    response = request(
        gateway.url,
        "POST",
        "/api/management/feeds/list",
        [("X-ApiKey", TOKEN_CI), ("Content-Type", content_type)],
        f"key={STOLEN}&a=1".encode(),
    )
    assert response.header("x-gateway-error") == [code]
    assert gateway.standin.requests == []


@pytest.mark.parametrize("target", ["/endpoints/dir/content/x", "/upack/internal/upload", "/api/x"])
def test_multipart_is_refused_where_form_fields_carry_keys(gateway: Gateway, target: str) -> None:
    body = b'--b\r\nContent-Disposition: form-data; name="key"\r\n\r\n' + STOLEN.encode() + b"\r\n--b--\r\n"
    response = request(
        gateway.url,
        "POST",
        target,
        [("X-ApiKey", TOKEN_CI), ("Content-Type", "multipart/form-data; boundary=b")],
        body,
    )
    assert response.header("x-gateway-error") == ["content_type_not_allowed"]
    assert gateway.standin.requests == []


def test_an_endless_header_value_is_refused_before_it_is_held(gateway: Gateway) -> None:
    with gateway.connect() as sock:
        sock.sendall(b"GET /__standin/echo HTTP/1.1\r\nHost: h\r\nX-Pad: ")
        reply = b""
        try:
            for _ in range(64):  # up to 4 MiB, never ending the line
                sock.sendall(b"a" * 65536)
        except OSError:
            pass  # the gateway closed the connection: what we want
        sock.settimeout(5)
        try:
            reply = sock.recv(65536)
        except OSError:
            reply = b""
    assert reply.startswith(b"HTTP/1.1 431"), reply[:100]
    assert gateway.standin.requests == []


def test_url_override_headers_are_never_forwarded(gateway: Gateway) -> None:
    headers = [
        ("X-ApiKey", TOKEN_CI),
        ("X-Original-URL", "/api/json/Users_DeleteUser"),
        ("X-Rewrite-URL", "/x"),
    ]
    headers.append(("X-Original-Method", "DELETE"))
    assert request(gateway.url, "GET", "/__standin/echo", headers).status == 200
    (rec,) = gateway.standin.requests
    assert {n for n, _ in rec.headers} & {"x-original-url", "x-rewrite-url", "x-original-method"} == set()


def test_a_deeply_nested_jwt_shaped_credential_is_a_clean_401(gateway: Gateway) -> None:
    nested = base64.urlsafe_b64encode(b"[" * 5000 + b"]" * 5000).rstrip(b"=").decode()
    response = request(gateway.url, "GET", "/__standin/echo", [("X-ApiKey", f"{nested}.e30.x")])
    assert response.status == 401
    assert "Traceback" not in gateway.log_path.read_text()


@pytest.fixture
def strict_gateway(tmp_path: Path, standin_server: StandinServer) -> Iterator[Gateway]:
    """A gateway with one-second head and body deadlines."""

    def deadlines(config: dict[str, Any]) -> None:
        config["limits"].update(head_timeout=1, body_timeout=1)

    with running_gateway(tmp_path, standin_server, mutate=deadlines) as gw:
        yield gw


def test_a_slow_head_is_cut_off(strict_gateway: Gateway) -> None:
    with strict_gateway.connect() as sock:
        sock.sendall(b"GET /__standin/echo HTTP/1.1\r\nHost: h\r\n")
        sock.settimeout(5)
        started = time.monotonic()
        reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 408"), reply[:100]
    assert time.monotonic() - started < 4


def test_an_idle_connection_is_cut_off(strict_gateway: Gateway) -> None:
    with strict_gateway.connect() as sock:
        sock.settimeout(5)
        reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 408"), reply[:100]


def test_a_slow_inspected_body_is_cut_off(strict_gateway: Gateway) -> None:
    with strict_gateway.connect() as sock:
        sock.sendall(
            f"POST /api/json/Feeds_GetFeeds HTTP/1.1\r\nHost: h\r\nX-ApiKey: {TOKEN_CI}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{".encode()
        )
        sock.settimeout(5)
        reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 408"), reply[:100]
    assert strict_gateway.standin.requests == []


def test_a_stranger_is_refused_before_its_body_is_read(gateway: Gateway) -> None:
    with gateway.connect() as sock:
        sock.sendall(
            b"POST /api/json/Feeds_GetFeeds HTTP/1.1\r\nHost: h\r\nX-ApiKey: pgw_stranger\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{"
        )
        sock.settimeout(5)
        reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 401"), reply[:100]
