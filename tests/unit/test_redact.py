"""gateway/redact.py: no presented credential and no userinfo survives into a log line or error body."""

from __future__ import annotations

import base64
import io
import json
import urllib.parse
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import audit
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


_TEXT_FIELDS = [
    "path", "subject", "issuer", "client", "token_label", "peer", "reason", "credential_source",
    "native_method", "key", "limit",
]  # fmt: skip


def _written(flow: Flow) -> str:
    """What ``audit.emit`` writes for ``flow``: the bytes a log reader gets."""
    stream = io.StringIO()
    audit.configure(stream)
    try:
        audit.emit(flow)
    finally:
        audit.configure()
    return stream.getvalue()


@settings(max_examples=300, deadline=None)
@given(
    token=tokens,
    spell=spellings,
    field=st.sampled_from(_TEXT_FIELDS),
    before=st.text(max_size=12),
    after=st.text(max_size=12),
)
def test_no_spelling_of_a_presented_token_reaches_the_written_line(
    token: str, spell: Callable[[str], str], field: str, before: str, after: str
) -> None:
    """Judged over the bytes written (``"`` and ``\\`` in the token are escaped by JSON there)."""
    flow = Flow("rid", "GET", "127.0.0.1", secrets=Needles.of([token.encode()]))
    setattr(flow, field, before + spell(token) + after)
    written = _written(flow)
    assert written.count("\n") == 1 and json.loads(written)["request_id"] == "rid"
    assert leaked_form(written.encode(), token.encode()) is None


def test_a_token_spanning_two_fields_of_the_line_is_not_written() -> None:
    """A credential crafted to look like the JSON between two values is in no single field: the check
    over the line's bytes finds it, and every string field is replaced."""
    token = 'zz9-tail","native_method":"Feeds_GetFeeds'
    flow = Flow("rid", "GET", "127.0.0.1", secrets=Needles.of([token.encode()]))
    flow.path, flow.native_method, flow.status = "/api/json/zz9-tail", "Feeds_GetFeeds", 403
    written = _written(flow)
    assert leaked_form(written.encode(), token.encode()) is None
    line = json.loads(written)
    assert line["path"] == PLACEHOLDER and line["status"] == 403  # numbers are kept


def test_userinfo_in_any_field_is_replaced_in_the_written_line() -> None:
    flow = Flow("rid", "GET", "127.0.0.1", issuer="https://issuer.example", path="/npm/f/@scope/x")
    flow.subject = "http://u:hunter2@host/"
    line = json.loads(_written(flow))
    assert line["sub"] == "http://***@host/" and line["path"] == "/npm/f/@scope/x"


def test_a_token_with_bytes_that_are_not_utf8_is_not_written() -> None:
    """A field holding such a token holds lone surrogates (``surrogateescape``), which the line spells
    as ``\\udcXX``: read back that way, they are the token's bytes."""
    token = b"pgw_\xff\xfe_" + b"k" * 20
    flow = Flow("rid", "GET", "127.0.0.1", secrets=Needles.of([token]))
    flow.subject = "x" + token.decode("utf-8", "surrogateescape")
    written = _written(flow)
    read_back = json.loads(written)["sub"].encode("utf-8", "surrogateescape")
    assert token not in read_back


@settings(max_examples=300, deadline=None)
@given(
    token=st.text(st.characters(exclude_categories=("Cs",)), min_size=12, max_size=30),
    field=st.sampled_from(_TEXT_FIELDS),
    before=st.text(max_size=8),
    after=st.text(max_size=8),
)
def test_a_token_in_any_script_is_not_in_the_line_a_reader_decodes(
    token: str, field: str, before: str, after: str
) -> None:
    """Any code point, beyond the BMP too (JSON writes those as a surrogate pair of escapes); judged
    by reading the line back as a log reader does, with ``json``."""
    flow = Flow("rid", "GET", "127.0.0.1", secrets=Needles.of([token.encode()]))
    setattr(flow, field, before + token + after)
    read_back = json.loads(_written(flow))
    assert all(token.lower() not in value.lower() for value in read_back.values() if isinstance(value, str))


def test_a_raw_path_holding_a_token_with_bytes_outside_ascii_is_not_shown() -> None:
    """Refused before it was understood, a path is logged made safe, non-ASCII bytes as ``\\xNN``
    text: a token with such bytes would be written in a spelling no needle reads, so it is not shown."""
    token = b"pgw_\xff\xfe_" + b"k" * 24
    flow = Flow("rid", "GET", "127.0.0.1", secrets=Needles.of([token]), raw_target=b"/x/" + token + b"/y")
    assert b"k" * 24 not in _written(flow).encode()
    assert json.loads(_written(flow))["path"] == PLACEHOLDER
    plain = Flow("rid", "GET", "127.0.0.1", secrets=Needles.of([token]), raw_target=b"/x/\xff/y")
    assert json.loads(_written(plain))["path"] == "/x/\\\\xff/y"  # no credential: shown made safe
