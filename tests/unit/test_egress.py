"""gateway/egress.py: what the client presented never leaves, whatever header or encoding hides it."""

from __future__ import annotations

import base64
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.egress import check_egress, presented
from gateway.errors import CredentialLeakBlocked
from gateway.upstream import UpstreamRequest

TOKEN = "pgw_ci_" + "a" * 40
CLEAN = [("x-apikey", "the-proget-key"), ("user-agent", "NuGet/6")]


def request(
    url: str = "/api/x", headers: list[tuple[str, str]] | None = None, body: bytes | None = None
) -> UpstreamRequest:
    return UpstreamRequest("POST", url, [*CLEAN, *(headers or [])], body)


def basic(user: str, password: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


@pytest.mark.parametrize(
    "leaky",
    [
        request("/api/x?note=" + TOKEN.upper()),
        request("/api/" + "".join(f"%25{b:02x}" for b in TOKEN.encode())),
        request(headers=[("x-trace", "id=" + base64.b64encode(b"api:" + TOKEN.encode()).decode())]),
        request(headers=[("x-" + TOKEN.encode().hex(), "1")]),
        request(body=b'{"n":"' + "".join(f"\\u{b:04X}" for b in TOKEN.encode()).encode() + b'"}'),
    ],
)
def test_a_presented_token_anywhere_is_refused(leaky: UpstreamRequest) -> None:
    with pytest.raises(CredentialLeakBlocked) as caught:
        check_egress(leaky, presented([(b"x-apikey", TOKEN.encode())]))
    assert caught.value.status == 400 and caught.value.code == "credential_leak_blocked"
    assert TOKEN not in str(caught.value)


def test_a_clean_request_passes() -> None:
    check_egress(
        request("/api/x?name=aaaa", body=b'{"feed":"f"}'), presented([(b"x-apikey", TOKEN.encode())])
    )


@pytest.mark.parametrize(
    ("headers", "secret"),
    [
        ([(b"authorization", basic("alice", TOKEN))], TOKEN),
        ([(b"authorization", basic(TOKEN, ""))], TOKEN),
        ([(b"Authorization", b"Bearer " + TOKEN.encode())], TOKEN),
        ([(b"proxy-authorization", b"Bearer " + TOKEN.encode())], TOKEN),
        ([(b"x-my_api_key", TOKEN.encode())], TOKEN),  # stripped as a credential-looking header
    ],
)
def test_presented_reads_every_credential_header_leniently(
    headers: list[tuple[bytes, bytes]], secret: str
) -> None:
    assert presented(headers).found_in(secret.encode())


def test_presented_ignores_cookies_and_short_values_but_keeps_the_settled_token() -> None:
    needles = presented([(b"cookie", b"session=" + TOKEN.encode()), (b"authorization", basic("api", "x"))])
    assert not needles.found_in(TOKEN.encode()) and not needles.found_in(b"api x")
    assert needles.adding(b"short").found_in(b"/SHORT/")


@given(key=st.text(alphabet=string.ascii_lowercase + string.digits, min_size=8, max_size=60))
def test_the_request_for_proget_shows_no_header_value_or_body_in_its_repr(key: str) -> None:
    """An UpstreamRequest that reaches a log or a traceback names no key (its headers hold it)."""
    sent = UpstreamRequest("PUT", "/api/x", [("x-apikey", key)], key.encode())
    assert key in sent.head.decode() and key not in repr(sent) and key not in str(sent)
