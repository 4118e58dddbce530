"""The response-header key-echo filter (gateway/rewrite.py) catches the key in every encoded form."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from gateway.rewrite import rewrite_response_headers
from gateway.settings import UpstreamKey

RAW = "proget-key-read-0123456789"
KEY = UpstreamKey.build("read", SecretStr(RAW))


def filtered(value: bytes) -> bool:
    out = rewrite_response_headers(
        [(b"x-echo", value), (b"x-other", b"fine")], KEY, 200, "http://p", "http://g"
    )
    assert (b"x-other", b"fine") in out
    return (b"x-echo", value) not in out


@pytest.mark.parametrize(
    "value",
    [
        RAW.upper().encode(),
        RAW.encode().hex().encode(),
        RAW.encode().hex().upper().encode(),
        base64.b64encode(b"x" + RAW.encode()),  # alignment 1
        base64.urlsafe_b64encode(b"xy" + RAW.encode() + b"z"),  # alignment 2, url-safe
        json.dumps({"k": "".join(f"\\u{ord(c):04x}" for c in RAW)}).encode().replace(b"\\\\", b"\\"),
        "".join(f"%{ord(c):02X}" for c in RAW).encode(),
    ],
)
def test_the_key_in_any_encoding_is_not_echoed(value: bytes) -> None:
    assert filtered(value)


@settings(max_examples=200, deadline=None)
@given(before=st.binary(max_size=5), after=st.binary(max_size=5))
def test_base64_of_the_key_inside_anything_is_not_echoed(before: bytes, after: bytes) -> None:
    assert filtered(base64.b64encode(before + RAW.encode() + after))


def test_unrelated_values_pass() -> None:
    assert not filtered(b'W/"etag-1"') and not filtered(b"text/html; charset=%75tf-8")


ECHOES = [
    RAW.encode(),
    RAW.upper().encode(),
    RAW.encode().hex().encode(),
    base64.b64encode(b"x" + RAW.encode()),
    "".join(f"%{ord(c):02X}" for c in RAW).encode(),
    "".join(f"%25{ord(c):02x}" for c in RAW).encode(),
    "".join(f"\\u{ord(c):04x}" for c in RAW).encode(),
]
PIECES = st.one_of(
    st.sampled_from([*ECHOES, RAW[:10].encode(), RAW[10:].encode(), b"%", b"%2", b"\\", b"\\u00", b"5"]),
    st.binary(max_size=8).filter(lambda b: b"\n" not in b and b"\r" not in b),
)
VALUES = st.builds(b"".join, st.lists(PIECES, max_size=4))


@settings(max_examples=300, deadline=None)
@given(values=st.lists(VALUES, min_size=1, max_size=6).map(lambda vs: vs + vs))
def test_the_headers_dropped_are_exactly_those_that_echo_the_key(values: list[bytes]) -> None:
    """Whatever the values (pieces of the key, escapes split across headers, repeats that the
    remembered answers serve), the headers dropped are exactly those a fresh search finds the key in."""
    headers = [(f"x-h{i}".encode(), value) for i, value in enumerate(values)]
    out = rewrite_response_headers(headers, KEY, 200, "http://p", "http://g")
    expected = [(n, v) for n, v in headers if not KEY.echoes.found_in(v)]
    assert out == expected
