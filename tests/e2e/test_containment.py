"""Issue 8 §1 and §6 against the real gateway process and the recording stand-in.

A client presents its token the ordinary way (``X-ApiKey``) and hides the same token once more in every
place a request has (header, query name, query value, path segment, form field, JSON value) in every
encoding a reader could undo. Whatever the gateway decides, the stand-in must have received nothing
from which the token can be read, and the gateway's own output (audit log, stdout and stderr) must not
contain it either. ``tests/leak_oracle.py`` judges, by decoding rather than by the gateway's needles.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import pytest

from gateway.standin import Recorded
from tests.e2e.conftest import TOKEN_CI, Gateway
from tests.e2e.rawhttp import RawResponse, request
from tests.leak_oracle import leaked_form

TOKEN = TOKEN_CI.encode()

ENCODINGS: dict[str, Callable[[bytes], str]] = {
    "raw": lambda t: t.decode(),
    "upper": lambda t: t.decode().upper(),
    "percent": lambda t: "".join(f"%{b:02X}" for b in t),
    "percent_twice": lambda t: "".join(f"%25{b:02x}" for b in t),
    "base64_user": lambda t: base64.b64encode(b"api:" + t).decode(),
    "base64_url_embedded": lambda t: base64.urlsafe_b64encode(b"x" + t + b"yz").decode().rstrip("="),
    "json_u": lambda t: "".join(f"\\u{b:04x}" for b in t),
    "hex": lambda t: t.hex().upper(),
}


def _q(text: str) -> str:
    return urllib.parse.quote(text, safe="%")


def send(gateway: Gateway, place: str, hidden: str) -> RawResponse:
    auth = [("X-ApiKey", TOKEN_CI)]
    if place == "header":
        return request(gateway.url, "GET", "/__standin/echo", [*auth, ("X-Trace", "id-" + hidden)])
    if place == "query_value":
        return request(gateway.url, "GET", "/__standin/echo?note=" + _q(hidden), auth)
    if place == "query_name":
        return request(gateway.url, "GET", "/__standin/echo?" + _q(hidden) + "=1", auth)
    if place == "path":
        return request(gateway.url, "GET", "/__standin/echo/" + urllib.parse.quote(hidden, safe="%"), auth)
    if place == "form":
        form = [*auth, ("Content-Type", "application/x-www-form-urlencoded")]
        return request(gateway.url, "POST", "/__standin/echo", form, b"feed=f&note=" + _q(hidden).encode())
    doc = json.dumps({"feed": "f", "nested": [{"note": "@@"}]}).replace("@@", hidden).encode()
    return request(gateway.url, "POST", "/__standin/echo", [*auth, ("Content-Type", "application/json")], doc)


def audit_line(gateway: Gateway, response: RawResponse, timeout: float = 3.0) -> dict[str, Any]:
    """The request's audit line, once it is completely written (the log may be read mid-write)."""
    request_id = response.header("x-request-id")[0]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in gateway.log_path.read_text().splitlines(keepends=True):
            if request_id in line and line.endswith("\n"):
                found: dict[str, Any] = json.loads(line)
                return found
        time.sleep(0.05)
    raise AssertionError(f"no audit line for {request_id}")


def recorded_bytes(rec: Recorded) -> bytes:
    head = "\n".join([rec.raw_path, rec.query, *(f"{n}: {v}" for n, v in rec.headers)])
    return head.encode("latin-1") + b"\n" + rec.body_head


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize("place", ["header", "query_value", "query_name", "path", "form", "json"])
def test_a_hidden_token_reaches_neither_proget_nor_the_log(
    gateway: Gateway, place: str, encoding: str
) -> None:
    response = send(gateway, place, ENCODINGS[encoding](TOKEN))
    audit = audit_line(gateway, response)
    assert response.status == 400, (response.status, audit)  # refused, by the guard or before it
    leaks = [leaked_form(recorded_bytes(rec), TOKEN) for rec in gateway.standin.requests]
    assert leaks == [None] * len(leaks)
    assert leaked_form(gateway.log_path.read_bytes(), TOKEN) is None
    assert leaked_form(response.body, TOKEN) is None


def test_the_guard_refuses_what_stripping_missed_and_audits_it(gateway: Gateway) -> None:
    response = send(gateway, "header", ENCODINGS["base64_user"](TOKEN))
    assert response.status == 400 and response.header("x-gateway-error") == ["credential_leak_blocked"]
    assert gateway.standin.requests == []
    audit = audit_line(gateway, response)
    assert (audit["decision"], audit["reason"], audit["client"]) == ("deny", "credential_leak_blocked", "ci")


def test_a_legitimate_request_still_passes(gateway: Gateway) -> None:
    response = request(gateway.url, "GET", "/__standin/echo?name=aaaa", [("X-ApiKey", TOKEN_CI)])
    assert response.status == 200
    (rec,) = gateway.standin.requests
    assert leaked_form(recorded_bytes(rec), TOKEN) is None


@pytest.mark.parametrize("scheme", ["http", "HTTPS"])
def test_userinfo_of_an_absolute_target_is_never_logged(gateway: Gateway, scheme: str) -> None:
    """Regression (§6): the target was refused, but the audit line carried it verbatim, token included."""
    secret = "pgw_userinfo_" + "z" * 30
    response = request(gateway.url, "GET", f"{scheme}://api:{secret}@gw.example/nuget/feed/x")
    assert response.status == 400
    audit_line(gateway, response)
    log = gateway.log_path.read_bytes()
    assert leaked_form(log, secret.encode()) is None
    assert leaked_form(response.body, secret.encode()) is None
    assert gateway.standin.requests == []


@pytest.mark.parametrize(
    ("presented", "target", "body", "content_type"),
    [
        ([("Authorization", f"Bearer {TOKEN_CI}")], "/__standin/echo", b"", None),
        (
            [("Authorization", "Basic " + base64.b64encode(b"ci:" + TOKEN).decode())],
            "/__standin/echo",
            b"",
            None,
        ),
        ([], f"/__standin/echo?key={TOKEN_CI}", b"", None),
        ([], "/__standin/echo", b"key=" + TOKEN, "application/x-www-form-urlencoded"),
        ([], "/__standin/echo", json.dumps({"API_Key": TOKEN_CI}).encode(), "application/json"),
    ],
    ids=["bearer", "basic", "query-key", "form-key", "json-api-key"],
)
def test_the_token_is_guarded_whatever_channel_presented_it(
    gateway: Gateway, presented: list[tuple[str, str]], target: str, body: bytes, content_type: str | None
) -> None:
    hidden = ("X-Trace", "id-" + ENCODINGS["base64_user"](TOKEN))
    headers = [*presented, hidden, *([("Content-Type", content_type)] if content_type else [])]
    response = request(gateway.url, "POST" if body else "GET", target, headers, body)
    assert response.status == 400 and response.header("x-gateway-error") == ["credential_leak_blocked"]
    assert gateway.standin.requests == []
    audit_line(gateway, response)
    assert leaked_form(gateway.log_path.read_bytes(), TOKEN) is None
