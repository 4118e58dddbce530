"""gateway/needles.py: every encoded form of a secret is found, at any alignment, and only it."""

from __future__ import annotations

import base64
import gc
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.needles import CACHED_SECRET_BYTES, MIN_FORM, NO_NEEDLES, Needles, decodings, forms, needles_of

secrets = st.binary(min_size=8, max_size=64).filter(lambda s: s.strip())
printable = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=8, max_size=48)
edges = st.binary(max_size=7)


@settings(max_examples=300, deadline=None)
@given(secret=secrets, before=edges, after=edges, urlsafe=st.booleans(), pad=st.booleans())
def test_base64_at_every_alignment_is_found(
    secret: bytes, before: bytes, after: bytes, urlsafe: bool, pad: bool
) -> None:
    """``user:token`` and a token inside any longer string: 0, 1 or 2 bytes of offset all match."""
    encoded = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(before + secret + after)
    assert Needles.of([secret]).found_in(encoded if pad else encoded.rstrip(b"="))


@settings(max_examples=300, deadline=None)
@given(secret=printable, escaped=st.lists(st.booleans(), min_size=48, max_size=48), data=st.data())
def test_escapes_of_any_subset_of_characters_are_undone(
    secret: str, escaped: list[bool], data: st.DataObject
) -> None:
    """An attacker escapes whichever characters it likes, once or twice, percent or JSON, any case."""
    style = data.draw(
        st.sampled_from(["%{:02x}", "%{:02X}", "%25{:02X}", "\\u{:04x}", "\\u{:04X}", "%5Cu{:04x}"])
    )
    # an encoder escapes its own escape character: a JSON string its '\\' and '"', a URL its '%'
    must = ('\\"' if "u" in style else "") + ("%" if "%" in style else "")
    text = "".join(
        style.format(ord(c)) if e or c in must else c for c, e in zip(secret, escaped, strict=False)
    )
    assert Needles.of([secret.encode()]).found_in(b"prefix " + text.encode() + b" suffix")


@settings(max_examples=200, deadline=None)
@given(secret=printable, backslashes=st.integers(min_value=1, max_value=3), before=st.text(max_size=8))
def test_escapes_behind_a_backslash_are_still_read(secret: str, backslashes: int, before: str) -> None:
    """``\\\\u003a`` is a backslash and ``u003a`` to JSON, but a colon to a reader who does not pair
    backslashes (found by the redactor's property test: such a line showed the token to a person)."""
    text = before + "\\" * backslashes + "".join(f"\\u{ord(c):04x}" for c in secret)
    assert Needles.of([secret.encode()]).found_in(text.encode())


@settings(max_examples=200, deadline=None)
@given(secret=printable)
def test_case_hex_and_json_string_forms_are_found(secret: str) -> None:
    needles = Needles.of([secret.encode()])
    for form in (secret.upper(), secret.swapcase(), secret.encode().hex(), secret.encode().hex().upper()):
        assert needles.found_in(b"a" + form.encode() + b"z")
    assert needles.found_in(json.dumps({"v": secret}).encode())


def test_ordinary_traffic_does_not_match() -> None:
    needles = Needles.of([b"pgw_ci_" + b"a" * 40])
    for text in (b"/nuget/feed/v3/index.json", b"GET /api/packages/x?name=aaaa%20b", b"\\u0041 Basic YXBp"):
        assert not needles.found_in(text)


def test_forms_skip_base64_slices_too_short_to_be_specific() -> None:
    assert all(len(f) >= MIN_FORM for f in forms(b"abcdefgh") if f != b"abcdefgh")
    assert forms(b"ab") == {b"ab", b"6162"}


@pytest.mark.parametrize(
    ("text", "reading"),
    [(b"a%2541b", b"aab"), (b"\\u0025" + b"41", b"a"), (b"x\\/y", b"x/y")],
)
def test_decodings_undo_stacked_escapes(text: bytes, reading: bytes) -> None:
    assert any(reading in d for d in decodings(text))


def test_no_decoding_without_an_escape_character() -> None:
    assert list(decodings(b"ABC")) == [b"abc"]


@given(
    secret=secrets,
    haystack=st.binary(max_size=80) | st.text(alphabet='%5cCu0041\\"/abcAB', max_size=80).map(str.encode),
    compiled=st.booleans(),
)
def test_the_length_shortcut_and_the_compiled_pattern_answer_like_a_search_of_every_decoding(
    secret: bytes, haystack: bytes, compiled: bool
) -> None:
    """``found_in`` skips haystacks shorter than the shortest form and searches a compiled pattern
    case-insensitively; both must agree with a plain search of every lowered decoding."""
    needles = Needles.of([secret], compiled=compiled)
    for data in (haystack, haystack[:3] + secret + haystack[3:], secret[: len(secret) // 2]):
        expected = any(form in reading for reading in decodings(data) for form in needles.forms)
        assert needles.found_in(data) is expected


@settings(max_examples=200, deadline=None)
@given(
    secrets=st.lists(
        st.one_of(
            st.binary(min_size=MIN_FORM, max_size=64), st.binary(min_size=CACHED_SECRET_BYTES, max_size=3000)
        ),
        max_size=3,
    )
)
def test_cached_needles_are_the_needles_of_the_same_values(secrets: list[bytes]) -> None:
    """The per-request cache (values short enough) and the uncached path (longer) give the same
    needles as building them, asked twice (the second answer may come from the cache)."""
    built = Needles.of(secrets)
    for _ in range(2):
        got = needles_of(tuple(secrets))
        assert (set(got.forms), got.shortest, got.pattern) == (set(built.forms), built.shortest, None)
    assert bool(needles_of(())) is False and needles_of(()) is NO_NEEDLES


def test_searching_escaped_text_leaves_nothing_for_the_collector() -> None:
    """Every request with a ``%`` or ``\\`` in a searched header or audit line reads it back: that
    must not leave a reference cycle per search (the gateway runs its collector rarely)."""
    needles = Needles.of([b"pgw_" + b"s" * 30])
    pad = b"x" * 64  # longer than the needles: shorter haystacks are not searched at all
    haystacks = [b"/a%2Fb?x=%41" + pad, b'{"path":"/x?a=\\u2026"}' + pad, b"%5Cu0041\\\\u0042" + pad]
    for haystack in haystacks:
        needles.found_in(haystack)  # warm: caches settle
    gc.collect()
    gc.disable()
    try:
        for haystack in haystacks * 50:
            assert not needles.found_in(haystack)
        assert gc.collect() == 0
    finally:
        gc.enable()


@pytest.mark.parametrize(
    "secret", ["pgw_tab\there_0123456789", "pgw_\r\n\b\f_0123456789", "pgw_😀_\U0001d518_0123456789"]
)
def test_every_json_escape_a_reader_undoes_is_read(secret: str) -> None:
    """``\\t`` and its kind, and a character beyond the BMP as a surrogate pair of ``\\u`` escapes, as
    ``json`` writes them (in a body sent to ProGet or in the audit line)."""
    body = json.dumps({"value": secret}).encode("ascii")
    assert secret.encode() not in body  # only an escaped spelling is there
    assert Needles.of([secret.encode()]).found_in(body)
