"""The key-field scanners: every spelling ProGet would read is found and cut; every other byte kept."""

from __future__ import annotations

import json
import unicodedata
from functools import cache
from urllib.parse import parse_qsl, quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import (
    BodyUnparseable,
    CredentialAmbiguous,
    CredentialMalformed,
    TooManyParameters,
)
from gateway.payloads import (
    JSON_NAMES,
    QUERY_NAMES,
    NameClass,
    classify_name,
    is_credential_name,
    names_match,
    scan_form,
    scan_json,
    scan_query,
)

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
        (b'{"x": {"Feed_Key": "stays"}, "API_Key": "%s"}', b'{"x": {"Feed_Key": "stays"}}'),
        (b'{"API_Key": "%s", "api_key": "%s", "k": 0}', b'{"k": 0}'),
    ],
)
def test_scan_json_cuts_root_members(body: bytes, stripped: bytes) -> None:
    scan = scan_json(body.replace(b"%s", TOKEN.encode()))
    assert scan.stripped == stripped
    assert {v for _, v in scan.found} == {TOKEN}
    json.loads(scan.stripped)


@pytest.mark.parametrize("body", [b"[1, 2]", b'"text"', b"{}", b'{"a": {"b": "API_Key"}}', b"null"])
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
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=4).filter(lambda k: not is_credential_name(k)), inner, max_size=3)
    ),
    max_leaves=8,
)


@given(
    st.dictionaries(
        st.text(max_size=6).filter(lambda k: not is_credential_name(k)), _json_values, max_size=6
    ),
    st.sampled_from(["API_Key", "api_key", "API_KEY"]),
    st.booleans(),
    st.sampled_from([(", ", ": "), (",", ":"), (" ,\n", " : ")]),
)
def test_json_scan_drops_exactly_the_key(
    doc: dict[str, object], key_name: str, with_key: bool, separators: tuple[str, str]
) -> None:
    full = dict(doc)
    if with_key:
        full[key_name] = TOKEN
    body = json.dumps(full, separators=separators, ensure_ascii=False).encode()
    scan = scan_json(body)
    assert json.loads(scan.stripped) == doc
    assert [v for _, v in scan.found] == ([TOKEN] if with_key else [])
    if not with_key:
        assert scan.stripped == body


# --- ambiguous spellings and positions (issue 8 §2): refused, never guessed ---------------------------


@pytest.mark.parametrize(
    ("name", "query", "json_root"),
    [
        ("key", NameClass.EXACT, NameClass.AMBIGUOUS),  # ProGet reads only API_Key from JSON
        ("KEY", NameClass.EXACT, NameClass.AMBIGUOUS),
        ("API_Key", NameClass.EXACT, NameClass.EXACT),
        ("api_KEY", NameClass.EXACT, NameClass.EXACT),
        ("ap\u0131_key", NameClass.EXACT, NameClass.EXACT),  # .NET upper-cases dotless i to I
        (" key", NameClass.AMBIGUOUS, NameClass.AMBIGUOUS),
        ("API_Key ", NameClass.AMBIGUOUS, NameClass.AMBIGUOUS),
        ("\u3000key\u00a0", NameClass.AMBIGUOUS, NameClass.AMBIGUOUS),  # Unicode whitespace
        ("\uff21\uff30\uff29_\uff2bey", NameClass.AMBIGUOUS, NameClass.AMBIGUOUS),  # full-width
        ("\U0001d5c4ey", NameClass.AMBIGUOUS, NameClass.AMBIGUOUS),  # mathematical sans-serif k
        ("apikey", NameClass.AMBIGUOUS, NameClass.AMBIGUOUS),
        ("api-key", NameClass.AMBIGUOUS, NameClass.AMBIGUOUS),
        ("Api.Key", NameClass.AMBIGUOUS, NameClass.AMBIGUOUS),
        ("apiKey", NameClass.AMBIGUOUS, NameClass.AMBIGUOUS),  # a camelCase ApiKey property
        ("k\u200bey", NameClass.AMBIGUOUS, NameClass.AMBIGUOUS),  # zero-width space
        ("key[]", NameClass.AMBIGUOUS, NameClass.AMBIGUOUS),
        ("key[0]", NameClass.AMBIGUOUS, NameClass.AMBIGUOUS),
        ("API_Key[x]", NameClass.AMBIGUOUS, NameClass.AMBIGUOUS),
        ("[0].key", NameClass.AMBIGUOUS, NameClass.AMBIGUOUS),
        ("model.API_Key", NameClass.AMBIGUOUS, NameClass.AMBIGUOUS),
        ("keys", NameClass.UNRELATED, NameClass.UNRELATED),
        ("monkey", NameClass.UNRELATED, NameClass.UNRELATED),
        ("key_id", NameClass.UNRELATED, NameClass.UNRELATED),
        ("API_Key_Id", NameClass.UNRELATED, NameClass.UNRELATED),
        ("Feed_Name", NameClass.UNRELATED, NameClass.UNRELATED),
        ("x-key", NameClass.UNRELATED, NameClass.UNRELATED),
        ("", NameClass.UNRELATED, NameClass.UNRELATED),
    ],
)
def test_classify_name(name: str, query: NameClass, json_root: NameClass) -> None:
    assert classify_name(name, QUERY_NAMES) is query
    assert classify_name(name, JSON_NAMES) is json_root


@pytest.mark.parametrize(
    "query",
    [
        b"+key=STOLEN",  # seen: '+' is a space, the name ' key' was forwarded with its value
        b"%20API_Key=STOLEN",
        b"a=1&key%5B%5D=STOLEN",
        b"key[0]=STOLEN",
        b"apikey=STOLEN",
        b"%EF%BC%A1%EF%BC%B0%EF%BC%A9_Key=STOLEN",  # full-width API
    ],
)
def test_ambiguous_query_and_form_names_are_refused(query: bytes) -> None:
    with pytest.raises(CredentialAmbiguous):
        scan_query(query)
    with pytest.raises(CredentialAmbiguous):
        scan_form(query)


@pytest.mark.parametrize(
    "body",
    [
        '{"\uff21\uff30\uff29_Key": "STOLEN"}',  # seen: full-width API_Key was forwarded
        '{"\\uff21\\uff30\\uff29_Key": "STOLEN"}',  # the same, as JSON escapes
        '[{"API_Key": "STOLEN"}]',  # seen: inside a root array
        '{"a": {"API_Key": "STOLEN"}}',  # seen: in a nested object
        '{"a": [1, {"b": [{"api_key": "STOLEN"}]}]}',
        '{"key": "STOLEN"}',
        '{"API_Key ": "STOLEN"}',
        '{"a": 1, "a": {"apikey": "STOLEN"}}',  # a duplicate member a dict would hide
    ],
)
def test_ambiguous_json_names_and_positions_are_refused(body: str) -> None:
    with pytest.raises(CredentialAmbiguous):
        scan_json(body.encode())


def test_a_credential_name_as_a_value_is_not_a_name() -> None:
    body = b'{"name": "API_Key", "list": ["key", {"v": "apikey"}]}'
    assert scan_json(body).stripped is body


def test_deep_json_is_walked_without_recursion() -> None:
    depth = 900  # below the parser's own limit, deeper than a naive recursive walk allows with margin
    body = b'{"a": ' + b"[" * depth + b'{"API_Key": "x"}' + b"]" * depth + b"}"
    with pytest.raises(CredentialAmbiguous):
        scan_json(body)


@cache
def _compatibility_forms() -> dict[str, tuple[str, ...]]:
    """Every character whose NFKC form is an ASCII letter or '_', by that (lowercase) character."""
    table: dict[str, list[str]] = {}
    for cp in range(0x80, 0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        folded = unicodedata.normalize("NFKC", chr(cp))
        if len(folded) == 1 and folded.isascii() and (folded.isalpha() or folded == "_"):
            table.setdefault(folded.lower(), []).append(chr(cp))
    return {k: tuple(v) for k, v in table.items()}


_WHITESPACE = "".join(c for c in map(chr, range(0x3100)) if c.isspace())


@st.composite
def credential_spellings(draw: st.DrawFn) -> str:
    """A credential name spelled any way a binder might still read it as one."""
    base = draw(st.sampled_from(["key", "api_key", "apikey", "api-key", "api.key"]))
    forms = _compatibility_forms()
    core = "".join(draw(st.sampled_from([c, c.upper(), *forms.get(c, ())])) for c in base)
    before = draw(st.text(alphabet=_WHITESPACE, max_size=2))
    after = draw(st.text(alphabet=_WHITESPACE, max_size=2))
    index = draw(st.sampled_from(["", "[]", "[0]", "[x]", "[0][1]"]))
    return before + core + index + after


def test_the_compatibility_table_is_not_empty() -> None:
    forms = _compatibility_forms()
    assert "\uff4b" in forms["k"] and "\u212a" in forms["k"] and "\uff3f" in forms["_"]


@given(credential_spellings(), st.booleans())
def test_query_and_form_never_forward_a_credential_spelling(name: str, form: bool) -> None:
    data = f"a=1&{quote(name, safe='')}={TOKEN}".encode()
    try:
        scan = scan_form(data) if form else scan_query(data)
    except CredentialAmbiguous:
        assert classify_name(name, QUERY_NAMES) is NameClass.AMBIGUOUS
        return
    assert TOKEN.encode() not in scan.stripped
    assert scan.found and {v for _, v in scan.found} == {TOKEN}


_POSITIONS = (
    lambda n: {n: TOKEN, "a": 1},
    lambda n: {"a": {n: TOKEN}},
    lambda n: {"a": [1, {n: TOKEN}]},
    lambda n: [{n: TOKEN}],
    lambda n: {"a": [[{"b": {n: TOKEN}}]]},
)


@given(credential_spellings(), st.sampled_from(range(len(_POSITIONS))), st.booleans())
def test_json_never_forwards_a_credential_spelling(name: str, position: int, ascii_only: bool) -> None:
    body = json.dumps(_POSITIONS[position](name), ensure_ascii=ascii_only).encode()
    try:
        scan = scan_json(body)
    except CredentialAmbiguous:
        return
    assert position == 0 and classify_name(name, JSON_NAMES) is NameClass.EXACT
    assert TOKEN.encode() not in scan.stripped


@given(st.text(max_size=12).filter(lambda n: not is_credential_name(n)), _values)
def test_unrelated_names_are_kept_byte_for_byte(name: str, value: str) -> None:
    query = f"{quote(name, safe='')}={value}".encode()
    assert scan_query(query).stripped is query
    body = json.dumps({"a": [{name: value}], name: value}).encode()
    assert scan_json(body).stripped is body
