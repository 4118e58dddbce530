"""Property tests: whatever canonicalize accepts is clean, a fixed point, and read the same way by Kestrel."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.canonical import Route, Target, canonicalize
from gateway.errors import GatewayError, NativeApiBlocked, NativePathInvalid

# Pieces an attacker would combine to make us and ProGet disagree on a path.
DANGEROUS = [
    "/", "/", "/", ".", "..", "%2e", "%2E", "%2f", "%2F", "%5c", "%5C", "\\", "%00", "%7f", "%u",
    "%u002f", "%25", "%252e", "%", "api", "API", "Api", "json", "JSON", "js%6Fn", "%61pi", "soap",
    "Soap12", "reference", "packages", "npm", "nuget", "v2", "_catalog", "feed", "Feeds_GetFeeds",
    "Users_CreateUser", "Feeds%5FGetFeeds", "X", "@scope", ";", ":", "~", "-", "_", " ", "?", "#",
    "%20", "%3B", "%C0%AE", "%E0%80%AF", "%ED%A0%80", "%C3%A9", "%7e", "%41", "0", "%2", "%g1",
]  # fmt: skip

# Pieces that survive the byte checks, so that combinations get far enough to be classified.
LIKELY = [
    "api", "API", "json", "Json", "js%6Fn", "%61pi", "packages", "soap", "reference", "npm", "NuGet", "v2",
    "_catalog", "feed", "Feeds_GetFeeds", "Feeds%5fGetFeeds", "X", "@scope", "%2f", "%5C", "%41", "%7e",
    "%2e", "a", "1.0", "-", "~", "_", ":", ";", "%20", "%3b", "%C3%A9", "%e2%82%ac", "%25zz", "%25",
]  # fmt: skip

# Whole segments that are, or decode to, a dot segment - alone or around an encoded separator.
DOTS = [".", "..", "%2e", "%2E", "%2e%2E", ".%2e", "..%2f", "%2e%2e%5c", "x%2F..", "..%2Fapi%2Fjson%2FX"]

# Escapes a server might decode differently: overlong, surrogate, truncated, double, control.
ENCODED = ["%C0%AE", "%E0%80%AF", "%ED%A0%80", "%FF", "%C3", "%25%34%31", "%2541", "%7F", "%00", "%c3%a9"]

LEADS = ["/", "/", "/api/", "/api/json/", "/api/packages/", "/npm/feed/", "/v2/", "/reference/", "/x/y/"]
QUERIES = ["", "", "", "?", "?a=1", "?key=x&y=%2F", "?a b", "?\x00", "?\x7f", "?%zz", "?a#b", "?\u00e9"]

PCHAR = "abcAPIjson0129-._~!$&'()*+,;=:@%/"

HEX_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
ANY_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")
KESTREL_ESCAPE = re.compile(rb"%(?!2F)([0-9A-F]{2})")
QUERY_BAD = re.compile(rb"[\x00-\x20\x7f-\xff#]")
HEAD_SEGMENT = re.compile(r"[A-Za-z0-9._~-]*")
NATIVE_METHOD = re.compile(r"[A-Za-z0-9_]+")
UNRESERVED = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def glued_targets() -> st.SearchStrategy[bytes]:
    """Dangerous pieces glued with no regard for segments: mostly refused, which is the point."""
    glued = st.lists(st.sampled_from(DANGEROUS), min_size=1, max_size=12).map("".join)
    parts = st.tuples(st.sampled_from([*LEADS, ""]), glued, st.sampled_from(QUERIES))
    return parts.map(lambda p: "".join(p).encode("utf-8"))


def structured_targets() -> st.SearchStrategy[bytes]:
    """A route-like lead, then segments built from pieces: gets far enough to be classified."""
    piece = st.one_of(st.sampled_from(LIKELY), st.sampled_from(LIKELY), st.sampled_from(DANGEROUS[3:]))
    segment = st.one_of(
        st.lists(piece, min_size=1, max_size=3).map("".join),
        st.sampled_from(DOTS),
        st.sampled_from(ENCODED),
    )
    path = st.tuples(st.lists(segment, max_size=4), st.sampled_from(["", "/"])).map(
        lambda p: "/".join(p[0]) + p[1]
    )
    parts = st.tuples(st.sampled_from(LEADS), path, st.sampled_from(QUERIES))
    return parts.map(lambda p: "".join(p).encode("utf-8"))


def grammar_targets() -> st.SearchStrategy[bytes]:
    return st.one_of(glued_targets(), structured_targets(), structured_targets())


def pchar_targets() -> st.SearchStrategy[bytes]:
    """Paths over the accepted raw alphabet, so more of them get past the byte checks."""
    return st.text(alphabet=PCHAR, max_size=40).map(lambda s: ("/" + s).encode("ascii"))


def any_targets() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=64),
        st.binary(max_size=64).map(lambda b: b"/" + b),
        pchar_targets(),
        glued_targets(),
        structured_targets(),
        structured_targets(),
    )


def accepted(raw: bytes) -> Target | None:
    """The Target, or None when refused; a refusal must always be one of ours."""
    try:
        return canonicalize(raw)
    except GatewayError:
        return None


def full_decode(path: str) -> bytes:
    return ANY_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), path.encode("ascii"))


def kestrel_view(path: str) -> str:
    """Fully percent-decode as Kestrel does (every escape except %2F), then lower-case like routing."""
    raw = KESTREL_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), path.encode("ascii"))
    return raw.decode("utf-8").lower()


def httpsys_segments(path: str) -> list[str]:
    """The most generous reading: every escape decoded and '\\' taken as '/', as HTTP.sys may."""
    return full_decode(path).decode("utf-8").replace("\\", "/")[1:].split("/")


def assert_clean(t: Target) -> None:
    path = t.path
    assert path.isascii()
    assert path.startswith("/")
    assert "//" not in path
    segments = path[1:].split("/")
    assert "." not in segments
    assert ".." not in segments
    for head in segments[:2]:
        assert HEAD_SEGMENT.fullmatch(head), path
        assert not head.endswith("."), path
    for escape in HEX_ESCAPE.findall(path):
        assert escape == escape.upper(), path
        assert int(escape, 16) not in UNRESERVED, path
    if t.route is not Route.FEED:
        assert "%2F" not in path.upper()
        assert "%5C" not in path.upper()
    assert "#" not in path and "?" not in path
    assert not QUERY_BAD.search(t.query)
    decoded = full_decode(path).decode("utf-8")  # strict: raises on overlong forms and surrogates
    assert not ANY_ESCAPE.search(full_decode(path)), path  # decoding twice changes nothing
    assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in decoded), path
    assert (t.native_method is not None) == (t.route is Route.NATIVE)
    if t.native_method is not None:
        assert NATIVE_METHOD.fullmatch(t.native_method)


def assert_fixed_point(t: Target) -> None:
    again = canonicalize(t.path.encode("ascii") + (b"?" + t.query if t.query else b""))
    assert again == t


def assert_model(t: Target) -> None:
    seen = kestrel_view(t.path)
    assert seen.startswith("/api/json/") == (t.route is Route.NATIVE), (t.path, t.route)
    if t.route is Route.NATIVE:
        assert t.native_method is not None
        assert seen.removeprefix("/api/json/").removesuffix("/") == t.native_method.lower()
    assert not seen.startswith("/api/soap")
    assert not seen.startswith("/reference/api")
    generous = httpsys_segments(t.path)
    assert "." not in generous and ".." not in generous, t.path


@settings(max_examples=1000, deadline=None)
@given(raw=any_targets())
def test_accepted_targets_are_clean_fixed_points(raw: bytes) -> None:
    t = accepted(raw)
    if t is not None:
        assert_clean(t)
        assert_fixed_point(t)


@settings(max_examples=1000, deadline=None)
@given(raw=any_targets())
def test_kestrel_reads_what_we_decided(raw: bytes) -> None:
    t = accepted(raw)
    if t is not None:
        assert_model(t)


@settings(max_examples=300, deadline=None)
@given(raw=grammar_targets())
def test_query_is_returned_verbatim(raw: bytes) -> None:
    t = accepted(raw)
    if t is not None:
        assert t.query == raw.partition(b"?")[2]


@settings(max_examples=400, deadline=None)
@given(
    method=st.text(alphabet="abcxyzABCXYZ019_", min_size=1, max_size=20),
    prefix=st.sampled_from(["/api/json/", "/API/JSON/", "/Api/Json/", "/api/js%6Fn/", "/%61pi/json/"]),
    slash=st.sampled_from(["", "/"]),
)
def test_native_method_survives_any_spelling(method: str, prefix: str, slash: str) -> None:
    """Escaping any characters of the method name still yields the same method, spelled plainly."""
    escaped = "".join(f"%{ord(c):02x}" if i % 2 else c for i, c in enumerate(method))
    t = canonicalize((prefix + escaped + slash).encode("ascii"))
    assert (t.route, t.native_method) == (Route.NATIVE, method)
    assert t.path.lower() == f"/api/json/{method}{slash}".lower()


@settings(max_examples=300, deadline=None)
@given(
    first=st.sampled_from(["api", "API", "%61pi"]),
    second=st.sampled_from(["soap", "SOAP", "soap12", "%73oap", "json", "JSON", "js%6Fn"]),
    rest=st.lists(
        st.sampled_from(["x", "..", ".", "%2e", "", "A;b", "A%2Fb", "A.b", "Feeds_GetFeeds"]), max_size=3
    ),
)
def test_native_and_soap_prefixes_never_pass_as_something_else(
    first: str, second: str, rest: list[str]
) -> None:
    """Under /api/json and /api/soap the outcome is NATIVE, blocked or refused - never API or OTHER."""
    raw = "/".join(["", first, second, *rest]).encode("ascii")
    try:
        t = canonicalize(raw)
    except (NativeApiBlocked, NativePathInvalid):
        return
    except GatewayError as error:
        assert error.status == 400
        return
    assert t.route is Route.NATIVE


@settings(max_examples=200, deadline=None)
@given(
    first=st.sampled_from(["reference", "Reference", "REFERENCE", "%72eference"]),
    second=st.sampled_from(["api", "API", "Api", "apis", "%61pi", "api-docs"]),
    rest=st.sampled_from(["", "/", "/native", "/soap?x=1"]),
)
def test_reference_api_is_always_blocked(first: str, second: str, rest: str) -> None:
    try:
        canonicalize(f"/{first}/{second}{rest}".encode("ascii"))
    except NativeApiBlocked:
        return
    raise AssertionError("a /reference/api path was not blocked")


FEED_PIECES = ["..", ".", "%2e", "%2E", "%2f", "%2F", "%5c", "%5C", "a", "@scope", "x.y", "~", "%41"]


@settings(max_examples=400, deadline=None)
@given(
    prefix=st.sampled_from(["npm", "NuGet", "v2", "maven2", "pypi"]),
    segments=st.lists(
        st.lists(st.sampled_from(FEED_PIECES), min_size=1, max_size=4).map("".join), min_size=1, max_size=4
    ),
)
def test_feed_paths_have_no_dot_segment_in_any_reading(prefix: str, segments: list[str]) -> None:
    """Encoded separators are allowed deep in feed paths, so no reading of them may climb out."""
    t = accepted("/".join(["", prefix, "feed", *segments]).encode("ascii"))
    if t is not None:
        assert (t.route, t.feed) == (Route.FEED, "feed")
        assert_clean(t)
        assert_model(t)
        assert_fixed_point(t)
