"""gateway/redact.py: no presented credential and no userinfo survives into a log line or error body."""

from __future__ import annotations

import base64
import urllib.parse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audit import Flow, event
from gateway.egress import presented
from gateway.errors import CredentialMalformed
from gateway.needles import Needles
from gateway.redact import PLACEHOLDER, redact, redact_error, redact_exception
from tests.leak_oracle import leaked_form

TOKEN = "pgw_ci_" + "a" * 40
SECRETS = presented([(b"x-apikey", TOKEN.encode())])
tokens = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=16, max_size=48)
spellings = st.sampled_from(
    [
        lambda t: t,
        str.upper,
        lambda t: urllib.parse.quote(urllib.parse.quote(t, safe=""), safe=""),
        lambda t: base64.b64encode(b"api:" + t.encode()).decode(),
        lambda t: t.encode().hex(),
        lambda t: "".join(f"\\u{ord(c):04x}" for c in t),
    ]
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"http://api:{TOKEN}@host/x", "http://***@host/x"),
        ("HTTPS://user:p%40ss@host:1/x", "HTTPS://***@host:1/x"),
        ("http://a@b@host/x?y=@z", "http://***@host/x?y=@z"),
        (f"/nuget/{TOKEN}/x", "/nuget/***/x"),
        ("/plain/path?user@example.org", "/plain/path?user@example.org"),
    ],
)
def test_userinfo_and_tokens_are_replaced_in_place(text: str, expected: str) -> None:
    assert redact(text, SECRETS) == expected


@settings(max_examples=300, deadline=None)
@given(token=tokens, spell=spellings, before=st.text(max_size=20), after=st.text(max_size=20))
def test_no_spelling_of_a_presented_token_survives(
    token: str, spell: object, before: str, after: str
) -> None:
    assert callable(spell)
    out = redact(before + spell(token) + after, Needles.of([token.encode()]))
    assert leaked_form(out.encode(), token.encode()) is None


def test_every_audit_field_passes_the_redactor() -> None:
    flow = Flow(
        "rid", "GET", "127.0.0.1", path=f"http://api:{TOKEN}@h/x", subject=TOKEN.upper(), secrets=SECRETS
    )
    line = str(event(flow))
    assert TOKEN.lower() not in line.lower() and PLACEHOLDER in line


def test_error_details_are_redacted() -> None:
    error = redact_error(CredentialMalformed(f"bad {TOKEN}"), SECRETS)
    assert TOKEN not in error.detail and TOKEN not in str(error)


def test_unexpected_exceptions_and_their_causes_are_redacted() -> None:
    try:
        try:
            int(TOKEN)
        except ValueError as inner:
            raise RuntimeError(f"while reading http://u:{TOKEN}@h/", 7) from inner
    except RuntimeError as outer:
        redact_exception(outer, SECRETS)
        assert outer.args == ("while reading http://***@h/", 7)
        assert TOKEN not in str(outer.__cause__)
