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
