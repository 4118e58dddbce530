"""The audit line's encoding: orjson on the hot path, ``json`` with ``ensure_ascii`` as the fallback.

Whatever the fields hold (any text, lone surrogates, control characters, integers beyond 64 bits),
the line is pure ASCII, one line, and reads back as the same document ``json`` would have written.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from unittest.mock import patch

from hypothesis import given
from hypothesis import strategies as st

from gateway.audit import _Clock, encode_line

_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),  # any code point, lone surrogates included
    st.text(alphabet=st.characters(max_codepoint=0x7F)),
)


@given(st.dictionaries(st.text(max_size=20), _values, max_size=25))
def test_every_line_is_ascii_and_reads_back_as_json_would_write_it(fields: dict[str, object]) -> None:
    line = encode_line(fields).decode("ascii")  # raises if not ASCII
    assert line.isascii()
    assert "\n" not in line and "\r" not in line
    assert json.loads(line) == json.loads(json.dumps(fields))


def test_an_ordinary_line_is_byte_for_byte_what_json_writes() -> None:
    fields = {"client": "ci", "status": 200, "duration_ms": 1.725, "sub": None, "path": "/nuget/f/"}
    assert encode_line(fields) == json.dumps(fields, separators=(",", ":")).encode()


def test_non_ascii_and_surrogates_are_escaped_not_lost() -> None:
    assert encode_line({"client": "équipe"}) == b'{"client":"\\u00e9quipe"}'
    assert encode_line({"path": "/a\udcff"}) == b'{"path":"/a\\udcff"}'
    assert encode_line({"n": 2**65}) == b'{"n":36893488147419103232}'


@given(
    millis=st.lists(st.integers(min_value=0, max_value=4_102_444_800_000), min_size=1, max_size=20),
    within=st.integers(min_value=100, max_value=900),
)
def test_the_time_field_is_the_utc_millisecond_of_each_line(millis: list[int], within: int) -> None:
    """Whatever the order of the clock readings (the text is reused within a millisecond and a
    second), each line's time is the UTC instant it was read, to the millisecond, as ISO 8601."""
    clock = _Clock()
    for milli in sorted(millis) + millis:
        reading = milli / 1000 + within / 1_000_000  # inside the millisecond, clear of its edges
        with patch("gateway.audit.time.time", return_value=reading):
            shown = clock.now()
        expected = datetime.fromtimestamp(milli / 1000, UTC).isoformat(timespec="milliseconds")
        assert shown == expected
