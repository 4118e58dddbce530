"""The key-field scanners: every spelling ProGet would read is found and cut; every other byte kept."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl, quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import BodyUnparseable, CredentialMalformed, TooManyParameters
from gateway.payloads import names_match, scan_form, scan_json, scan_query

TOKEN = "pgw_" + "t" * 40


@pytest.mark.parametrize(
    ("name", "expected"),
    [("key", True), ("KEY", True), ("Key", True), ("API_Key", False), ("keys", False), ("ke", False)],
)
def test_names_match_key(name: str, expected: bool) -> None:
    assert names_match(name, "key") is expected


def test_names_match_dotless_i_as_dotnet_does() -> None:
    assert names_match("ap\u0131_key", "api_key")  # .NET: ToUpperInvariant of U+0131 is 'I'
    assert not names_match("apj_key", "api_key")


@pytest.mark.parametrize(
    ("query", "stripped", "sources"),
    [
        (f"a=1&key={TOKEN}&b=2", b"a=1&b=2", ["query:key"]),
        (f"key={TOKEN}", b"", ["query:key"]),
        (f"KEY={TOKEN}&x", b"x", ["query:key"]),
        (f"API_Key={TOKEN}&a=1", b"a=1", ["query:api_key"]),
        (f"ap%69%5Fkey={TOKEN}", b"", ["query:api_key"]),
        (f"k%65y={TOKEN}&a=%zz", b"a=%zz", ["query:key"]),
        (f"a=1&&key={TOKEN}&", b"a=1&&", ["query:key"]),
        ("a=1&keys=2&monkey=3", b"a=1&keys=2&monkey=3", []),
    ],
)
def test_scan_query(query: str, stripped: bytes, sources: list[str]) -> None:
    scan = scan_query(query.encode())
    assert scan.stripped == stripped
    assert [s for s, _ in scan.found] == sources
    assert all(v == TOKEN for _, v in scan.found)


def test_empty_query_credential_is_malformed() -> None:
    with pytest.raises(CredentialMalformed):
        scan_query(b"a=1&key=")


def test_query_plus_and_percent_in_value() -> None:
    assert scan_query(b"key=ab%2Bcd").found == (("query:key", "ab+cd"),)
    with pytest.raises(CredentialMalformed):
        scan_query(b"key=ab+cd")  # '+' is a space: not a printable token


def test_query_parameter_cap() -> None:
    assert scan_query(b"&".join([b"a=1"] * 10), max_params=10).stripped.count(b"&") == 9
    with pytest.raises(TooManyParameters):
        scan_query(b"&".join([b"a=1"] * 11), max_params=10)


def test_form_is_scanned_like_a_query_but_must_be_ascii() -> None:
    assert scan_form(f"Feed_Name=x&key={TOKEN}&n=2".encode()).stripped == b"Feed_Name=x&n=2"
    with pytest.raises(BodyUnparseable):
        scan_form(b"a=\xc3\xa9")
    with pytest.raises(BodyUnparseable):
        scan_form(b"a=1\r\nkey=x")


@pytest.mark.parametrize(
    ("body", "stripped"),
    [
        (b'{"a": 1, "API_Key": "%s", "b": [1, 2]}', b'{"a": 1, "b": [1, 2]}'),
        (b'{"API_KEY":"%s"}', b"{}"),
        (b'  { "api_key" : "%s" }  ', b"  { }  "),
        (b'{"a":1.50,"api_key":"%s"}', b'{"a":1.50}'),
        (b'{"api\\u005fkey": "%s", "z": "\xc3\xa9"}', b'{"z": "\xc3\xa9"}'),
        (b'{"x": {"API_Key": "nested stays"}, "API_Key": "%s"}', b'{"x": {"API_Key": "nested stays"}}'),
        (b'{"API_Key": "%s", "api_key": "%s", "k": 0}', b'{"k": 0}'),
    ],
)
def test_scan_json_cuts_root_members(body: bytes, stripped: bytes) -> None:
    scan = scan_json(body.replace(b"%s", TOKEN.encode()))
    assert scan.stripped == stripped
    assert {v for _, v in scan.found} == {TOKEN}
    json.loads(scan.stripped)


@pytest.mark.parametrize("body", [b"[1, 2]", b'"text"', b"{}", b'{"a": {"API_Key": "x"}}', b"null"])
def test_json_without_root_key_is_untouched(body: bytes) -> None:
    scan = scan_json(body)
    assert scan.found == ()
    assert scan.stripped is body


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b'{"a": NaN}',
        b'{"a": Infinity}',
        b"\xef\xbb\xbf{}",
        b'{"a": "\xff"}',
        b'{"a": 1} x',
        b"[" * 100_000 + b"]" * 100_000,
        b"{'a': 1}",
    ],
)
def test_unparseable_json_is_refused(body: bytes) -> None:
    with pytest.raises(BodyUnparseable):
        scan_json(body)


@pytest.mark.parametrize("value", [b"1", b'""', b"null", b'["x"]', b'"a b"', b'"\\u00e9"'])
def test_json_key_must_be_a_printable_string(value: bytes) -> None:
    with pytest.raises(CredentialMalformed):
        scan_json(b'{"API_Key": ' + value + b"}")


def test_secrets_stay_out_of_repr() -> None:
    assert TOKEN not in repr(scan_query(f"key={TOKEN}".encode()))


# --- properties ------------------------------------------------------------------------------------

_names = st.sampled_from(["a", "b", "Feed_Name", "keys", "x-key", "key", "KEY", "API_Key", "api_KEY"])
_values = st.text(alphabet="abcXYZ019-_.~", min_size=1, max_size=12)


@given(st.lists(st.tuples(_names, _values), max_size=20))
def test_query_scan_agrees_with_the_standard_parser(pairs: list[tuple[str, str]]) -> None:
    """After the scan, no parameter named like a key is left, and every other one is kept in order."""
    query = "&".join(f"{quote(n)}={quote(v)}" for n, v in pairs)
    scan = scan_query(query.encode())
    is_key = [n.lower() in ("key", "api_key") for n, _ in pairs]
    assert [v for _, v in scan.found] == [v for (_, v), k in zip(pairs, is_key, strict=True) if k]
    left = parse_qsl(scan.stripped.decode(), keep_blank_values=True)
    assert left == [p for p, k in zip(pairs, is_key, strict=True) if not k]


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)


@given(
    st.dictionaries(st.text(max_size=6), _json_values, max_size=6),
    st.sampled_from(["API_Key", "api_key", "API_KEY"]),
    st.booleans(),
    st.sampled_from([(", ", ": "), (",", ":"), (" ,\n", " : ")]),
)
def test_json_scan_drops_exactly_the_key(
    doc: dict[str, object], key_name: str, with_key: bool, separators: tuple[str, str]
) -> None:
    doc = {k: v for k, v in doc.items() if not names_match(k, "api_key")}
    full = dict(doc)
    if with_key:
        full[key_name] = TOKEN
    body = json.dumps(full, separators=separators, ensure_ascii=False).encode()
    scan = scan_json(body)
    assert json.loads(scan.stripped) == doc
    assert [v for _, v in scan.found] == ([TOKEN] if with_key else [])
    if not with_key:
        assert scan.stripped == body
