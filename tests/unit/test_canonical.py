"""Table-driven tests of request-target canonicalization: what is accepted as what, what is refused why."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.canonical import API_FAMILIES, FEED_PREFIXES, Route, Target, canonicalize
from gateway.errors import (
    GatewayError,
    NativeApiBlocked,
    NativeMethodNotAllowed,
    NativePathInvalid,
    PathNotCanonical,
    TargetNotOriginForm,
    TargetTooLong,
)
from gateway.policy import decide
from gateway.settings import build_config, token_hash

N, A, F, OT = Route.NATIVE, Route.API, Route.FEED, Route.OTHER

# raw target → (canonical path, route, native_method, feed_type, feed)
ACCEPTED: list[tuple[bytes, tuple[str, Route, str | None, str | None, str | None]]] = [
    # Native API: case of the prefix is ProGet's business, the method is kept as written.
    (b"/api/json/Feeds_GetFeeds", ("/api/json/Feeds_GetFeeds", N, "Feeds_GetFeeds", None, None)),
    (b"/API/JSON/Feeds_GetFeeds", ("/API/JSON/Feeds_GetFeeds", N, "Feeds_GetFeeds", None, None)),
    (b"/Api/Json/feeds_getfeeds", ("/Api/Json/feeds_getfeeds", N, "feeds_getfeeds", None, None)),
    (b"/api/json/Feeds%5FGetFeeds", ("/api/json/Feeds_GetFeeds", N, "Feeds_GetFeeds", None, None)),
    (b"/api/json/Feeds%5fGetFeeds", ("/api/json/Feeds_GetFeeds", N, "Feeds_GetFeeds", None, None)),
    (b"/api/json/%46eeds_GetFeeds", ("/api/json/Feeds_GetFeeds", N, "Feeds_GetFeeds", None, None)),
    (b"/api/json/Feeds_GetFeeds/", ("/api/json/Feeds_GetFeeds/", N, "Feeds_GetFeeds", None, None)),
    (b"/api/js%6Fn/X", ("/api/json/X", N, "X", None, None)),
    (b"/%61pi/json/X", ("/api/json/X", N, "X", None, None)),
    (b"/api/json/Feeds_GetFeeds?key=abc&x=1", ("/api/json/Feeds_GetFeeds", N, "Feeds_GetFeeds", None, None)),
    # Other API paths.
    (b"/api", ("/api", A, None, None, None)),
    (b"/api/", ("/api/", A, None, None, None)),
    (b"/api/jsonx", ("/api/jsonx", A, None, None, None)),  # no method segment: nothing to call
    (b"/api/xml/", ("/api/xml/", A, None, None, None)),
    (b"/api/x", ("/api/x", A, None, None, None)),
    (b"/API/Settings/list", ("/API/Settings/list", A, None, None, None)),
    (b"/api/api-keys/create", ("/api/api-keys/create", A, None, None, None)),
    (b"/api/sca/builds?project=x", ("/api/sca/builds", A, None, None, None)),
    (b"/api/Package-Deployment/", ("/api/Package-Deployment/", A, None, None, None)),
    (b"/api/packages/myfeed/download", ("/api/packages/myfeed/download", A, None, "api", "myfeed")),
    (b"/API/Packages/MyFeed/upload", ("/API/Packages/MyFeed/upload", A, None, "api", "MyFeed")),
    (b"/api/packages/", ("/api/packages/", A, None, None, None)),
    (b"/api/management/feeds/list", ("/api/management/feeds/list", A, None, None, None)),
    (b"/api/management/x%20y", ("/api/management/x%20y", A, None, None, None)),
    # Feeds.
    (b"/npm/feed/@scope%2fname", ("/npm/feed/@scope%2Fname", F, None, "npm", "feed")),
    (
        b"/npm/feed/@scope%2fname/-/name-1.0.0.tgz",
        ("/npm/feed/@scope%2Fname/-/name-1.0.0.tgz", F, None, "npm", "feed"),
    ),
    (b"/npm/feed/@scope%2Fname", ("/npm/feed/@scope%2Fname", F, None, "npm", "feed")),
    (b"/nuget/feed/v3/index.json", ("/nuget/feed/v3/index.json", F, None, "nuget", "feed")),
    (b"/NuGet/Internal/", ("/NuGet/Internal/", F, None, "nuget", "Internal")),
    (b"/nuget", ("/nuget", F, None, "nuget", None)),
    (b"/nuget/", ("/nuget/", F, None, "nuget", None)),
    (b"/v2/", ("/v2/", F, None, "v2", None)),
    (b"/v2/_catalog", ("/v2/_catalog", F, None, "v2", None)),
    (b"/v2/_auth", ("/v2/_auth", F, None, "v2", None)),
    (b"/npm/_feed/x", ("/npm/_feed/x", F, None, "npm", "_feed")),
    (b"/V2/_catalog", ("/V2/_catalog", F, None, "v2", None)),
    (
        b"/v2/feed/repo/blobs/uploads/",
        ("/v2/feed/repo/blobs/uploads/", F, None, "v2", "feed"),
    ),
    (
        b"/maven2/feed/com/acme/x/1.0/x-1.0.pom",
        ("/maven2/feed/com/acme/x/1.0/x-1.0.pom", F, None, "maven2", "feed"),
    ),
    (b"/pypi/feed/simple/pkg/", ("/pypi/feed/simple/pkg/", F, None, "pypi", "feed")),
    (b"/pypi/feed/simple/my%7epkg/", ("/pypi/feed/simple/my~pkg/", F, None, "pypi", "feed")),
    (b"/debian/feed/dists/x%2by", ("/debian/feed/dists/x%2By", F, None, "debian", "feed")),
    (b"/upack/feed/download/a%5cb", ("/upack/feed/download/a%5Cb", F, None, "upack", "feed")),
    # Everything else.
    (b"/health", ("/health", OT, None, None, None)),
    (b"/", ("/", OT, None, None, None)),
    (b"/?x=1", ("/", OT, None, None, None)),
    (b"/feeds/internal", ("/feeds/internal", OT, None, None, None)),
    (b"/reference", ("/reference", OT, None, None, None)),
    (b"/reference/other", ("/reference/other", OT, None, None, None)),
    (b"/administration/x/y:z@w", ("/administration/x/y:z@w", OT, None, None, None)),
    (b"/a/b/%25zz", ("/a/b/%25zz", OT, None, None, None)),
    (b"/a/b/%25%7A%7a", ("/a/b/%25zz", OT, None, None, None)),
    (b"/a/b/c%7e%7E", ("/a/b/c~~", OT, None, None, None)),
    (b"/a/b/%c3%a9", ("/a/b/%C3%A9", OT, None, None, None)),
    (b"/a/b/%e2%82%ac", ("/a/b/%E2%82%AC", OT, None, None, None)),
    (b"/a/b/...", ("/a/b/...", OT, None, None, None)),
]

REFUSED: list[tuple[bytes, type[GatewayError]]] = [
    # Rule 2: origin-form only, no fragment.
    (b"http://evil/api/json/X", TargetNotOriginForm),
    (b"https://proget/api/json/X", TargetNotOriginForm),
    (b"proget:443", TargetNotOriginForm),
    (b"*", TargetNotOriginForm),
    (b"", TargetNotOriginForm),
    (b"%2Fapi/json/X", TargetNotOriginForm),
    (b"/api/json/X#frag", PathNotCanonical),
    (b"/api/json/X?a=b#frag", PathNotCanonical),
    # Rule 3: query bytes.
    (b"/api/json/X?a=b c", PathNotCanonical),
    (b"/api/json/X?a=\x00", PathNotCanonical),
    (b"/api/json/X?a=\x7f", PathNotCanonical),
    (b"/api/json/X?a=\r\nX-Injected: 1", PathNotCanonical),
    (b"/api/json/X?a=\xc3\xa9", PathNotCanonical),
    # Rule 4: raw bytes outside pchar.
    (b"/api\\json\\X", PathNotCanonical),
    (b"/npm/feed/a\\b", PathNotCanonical),
    (b"/api/json/X Y", PathNotCanonical),
    (b"/a/\xc3\xa9", PathNotCanonical),
    (b"/a/[b]", PathNotCanonical),
    (b"/a/<b>", PathNotCanonical),
    (b"/a/b|c", PathNotCanonical),
    (b"/a/b\tc", PathNotCanonical),
    (b'/a/"b"', PathNotCanonical),
    # Rule 5: malformed escapes and double encoding.
    (b"/api/json/%u0058", PathNotCanonical),
    (b"/npm/feed/%u2215", PathNotCanonical),
    (b"/a/b/%%41", PathNotCanonical),
    (b"/a/b/%4", PathNotCanonical),
    (b"/a/b/%", PathNotCanonical),
    (b"/a/b/%G1", PathNotCanonical),
    (b"%252e", TargetNotOriginForm),
    (b"/%252e", PathNotCanonical),
    (b"/a/b/%252e%252e/api/json/X", PathNotCanonical),
    (b"/a/b/%252F", PathNotCanonical),
    (b"/a/b/%25%32%65", PathNotCanonical),  # decodes to the double escape %252e
    (b"/nuget/feed/%252e", PathNotCanonical),
    (b"/nuget/feed/x%25%34%31y", PathNotCanonical),
    (b"/api/packages/feed/%2525", PathNotCanonical),
    (b"/a/b/%2541", PathNotCanonical),
    # Rule 7: encoded controls, invalid UTF-8.
    (b"/api/json/X%00", PathNotCanonical),
    (b"/a/b/c%0d%0a", PathNotCanonical),
    (b"/a/b/c%7F", PathNotCanonical),
    (b"/a/b/c%7f", PathNotCanonical),
    (b"/a/b/%1F", PathNotCanonical),
    (b"/api/json/%C0%AE", PathNotCanonical),
    (b"/a/b/%C0%AE%C0%AE/api/json/X", PathNotCanonical),
    (b"/a/b/%E0%80%AF", PathNotCanonical),
    (b"/a/b/%ED%A0%80", PathNotCanonical),
    (b"/a/b/%FF", PathNotCanonical),
    (b"/a/b/%E2%82", PathNotCanonical),
    # Rule 8: empty and dot segments.
    (b"/api//json/X", PathNotCanonical),
    (b"//api/json/X", PathNotCanonical),
    (b"//", PathNotCanonical),
    (b"/nuget/feed//x", PathNotCanonical),
    (b"/nuget/feed/x//", PathNotCanonical),
    (b"/api/json/../json/X", PathNotCanonical),
    (b"/api/./json/X", PathNotCanonical),
    (b"/api/%2e%2E/json/X", PathNotCanonical),
    (b"/nuget/feed/%2E", PathNotCanonical),
    (b"/nuget/feed/x/..", PathNotCanonical),
    (b"/..", PathNotCanonical),
    # Rule 9: encoded separators outside feed paths.
    (b"/api/json%2FX", PathNotCanonical),
    (b"/api%2Fjson/X", PathNotCanonical),
    (b"/api%2fjson/X", PathNotCanonical),
    (b"/api/packages/f/a%2Fb", PathNotCanonical),
    (b"/health/a%5Cb", PathNotCanonical),
    (b"/npm/a%2Fb/x", PathNotCanonical),  # feed-name position: rule 10
    # Beyond rule 8: a dot segment hidden behind an encoded separator inside a feed path.
    (b"/npm/feed/..%2F..%2Fapi%2Fjson%2FX", PathNotCanonical),
    (b"/npm/feed/..%5C..%5Capi%5Cjson%5CX", PathNotCanonical),
    (b"/npm/feed/x%2F.", PathNotCanonical),
    # Rule 10: first two segments.
    (b"/api/json./X", PathNotCanonical),
    (b"/api./json/X", PathNotCanonical),
    (b"/api/json;a/X", PathNotCanonical),
    (b"/api;a/json/X", PathNotCanonical),
    (b"/api/json:x/X", PathNotCanonical),
    (b"/api/json%20/X", PathNotCanonical),
    (b"/nuget/feed./x", PathNotCanonical),
    (b"/nuget/fe%20ed/x", PathNotCanonical),
    (b"/nuget/fe@ed/x", PathNotCanonical),
    # Rule 11: blocked interfaces.
    (b"/api/soap", NativeApiBlocked),
    (b"/API/Soap12", NativeApiBlocked),
    (b"/api/soap/anything?x=1", NativeApiBlocked),
    (b"/api/%73oap", NativeApiBlocked),
    (b"/reference/api/native", NativeApiBlocked),
    (b"/Reference/API", NativeApiBlocked),
    (b"/reference/apis", NativeApiBlocked),
    # Rule 11: Native API shape.
    (b"/api/json", NativePathInvalid),
    (b"/api/json/", NativePathInvalid),
    (b"/api/json/A/B", NativePathInvalid),
    (b"/api/json/A/B/", NativePathInvalid),
    (b"/api/json/A;b", NativePathInvalid),
    (b"/api/json/A%2Fb", NativePathInvalid),
    (b"/api/json/A%2fb", NativePathInvalid),
    (b"/api/json/A%5Cb", NativePathInvalid),
    (b"/api/json/A-b", NativePathInvalid),
    (b"/api/json/A.b", NativePathInvalid),
    (b"/api/json/Feeds_GetFeeds%20", NativePathInvalid),
    (b"/api/json/%C3%A9", NativePathInvalid),
    (b"/api/json/A:b", NativePathInvalid),
    # Section 3: any other format segment is a Native API call we do not inspect.
    (b"/api/xml/Users_GetUsers", NativePathInvalid),
    (b"/api/XML/Feeds_GetFeeds/", NativePathInvalid),
    (b"/api/jsonx/X", NativePathInvalid),
    (b"/api/json2/Feeds_GetFeeds", NativePathInvalid),
    (b"/api/Json.xml/Feeds_GetFeeds", NativePathInvalid),
    (b"/api/js%6Fnp/Feeds_GetFeeds", NativePathInvalid),
    (b"/api/json/Feeds_GetFeeds.json", NativePathInvalid),
    (b"/api/json/Feeds_GetFeeds.xml/", NativePathInvalid),
    (b"/api/native/Feeds_GetFeeds", NativePathInvalid),
    (b"/api/files/big.bin", NativePathInvalid),
    (b"/api/x/y/z", NativePathInvalid),
    (b"/api/packagesx/feed/download", NativePathInvalid),
]


@pytest.mark.parametrize(("raw", "expected"), ACCEPTED, ids=[r.decode("latin-1") for r, _ in ACCEPTED])
def test_accepted(raw: bytes, expected: tuple[str, Route, str | None, str | None, str | None]) -> None:
    t = canonicalize(raw)
    assert (t.path, t.route, t.native_method, t.feed_type, t.feed) == expected
    assert t.path.isascii()


@pytest.mark.parametrize(("raw", "error"), REFUSED, ids=[r.decode("latin-1") for r, _ in REFUSED])
def test_refused(raw: bytes, error: type[GatewayError]) -> None:
    with pytest.raises(GatewayError) as info:
        canonicalize(raw)
    assert type(info.value) is error


def test_refusal_status_and_code_reach_the_wire() -> None:
    """The exact class decides status and code; a refused blocked API must not look like a 400."""
    with pytest.raises(NativeApiBlocked) as blocked:
        canonicalize(b"/api/soap")
    assert (blocked.value.status, blocked.value.code) == (403, "native_api_blocked")
    with pytest.raises(TargetTooLong) as long:
        canonicalize(b"/" + b"a" * 9000)
    assert (long.value.status, long.value.code) == (414, "target_too_long")


def test_query_passes_through_untouched() -> None:
    query = b"key=abc%2fDEF&x=%7e&y=a/b?c&z=;:@!$'()*+,&%zz&empty="
    t = canonicalize(b"/nuget/feed/v3/index.json?" + query)
    assert t.query == query
    assert t.path == "/nuget/feed/v3/index.json"


def test_query_split_at_first_question_mark() -> None:
    t = canonicalize(b"/api/json/X??a=1?b")
    assert (t.path, t.query, t.native_method) == ("/api/json/X", b"?a=1?b", "X")


def test_empty_query_is_empty_bytes() -> None:
    assert canonicalize(b"/health?").query == b""
    assert canonicalize(b"/health").query == b""


def test_length_limit_is_inclusive() -> None:
    limit = 64
    at_limit = b"/nuget/feed/" + b"a" * (limit - len(b"/nuget/feed/"))
    assert len(at_limit) == limit
    assert canonicalize(at_limit, max_target_bytes=limit).path == at_limit.decode()
    with pytest.raises(TargetTooLong):
        canonicalize(at_limit + b"a", max_target_bytes=limit)


def test_length_limit_counts_the_query_and_default_is_8192() -> None:
    target = b"/health?" + b"q" * (8192 - len(b"/health?"))
    assert canonicalize(target).query == b"q" * (8192 - len(b"/health?"))
    with pytest.raises(TargetTooLong):
        canonicalize(target + b"q")


def test_length_is_checked_before_anything_else() -> None:
    with pytest.raises(TargetTooLong):
        canonicalize(b"*" * 20, max_target_bytes=10)


def test_feed_prefixes_are_the_documented_set() -> None:
    documented = {
        "nuget", "npm", "pypi", "v2", "maven2", "debian", "rpm", "apk", "rubygems", "helm", "conda",
        "cran", "conan", "cargo", "composer", "pub", "vsix", "upack", "symbols", "endpoints",
    }  # fmt: skip
    assert documented == FEED_PREFIXES


@pytest.mark.parametrize("prefix", sorted(FEED_PREFIXES))
def test_every_feed_prefix_is_a_feed_route(prefix: str) -> None:
    t = canonicalize(f"/{prefix.upper()}/my-feed/x".encode())
    assert (t.route, t.feed_type, t.feed) == (Route.FEED, prefix, "my-feed")


def test_target_is_frozen_and_positional() -> None:
    t = Target("/api/json/X", b"", Route.NATIVE, "X", None, None)
    assert canonicalize(b"/api/json/X") == t
    with pytest.raises(AttributeError):
        t.path = "/other"  # type: ignore[misc]


def test_route_values_are_stable_strings() -> None:
    assert [r.value for r in Route] == ["native", "api", "feed", "other"]
    assert f"{Route.NATIVE}" == "native"


def test_api_families_are_the_documented_set() -> None:
    """proget-facts.md, "API families" and the legacy endpoints of §1.2; docs/security.md lists them."""
    documented = {
        "packages", "promotions", "repackaging", "management", "storage", "containers", "sca",
        "licenses", "security", "api-keys", "settings", "package-deployment", "dependencies",
        "webhooks", "connector-health",
    }  # fmt: skip
    assert documented == API_FAMILIES


@pytest.mark.parametrize("family", sorted(API_FAMILIES))
def test_every_family_is_an_api_route_in_any_case(family: str) -> None:
    for spelling in (family, family.upper(), family.title()):
        t = canonicalize(f"/api/{spelling}/list/x/".encode())
        assert (t.route, t.native_method) == (Route.API, None)


# --- property: under an /api/** rule, no spelling of a Native API call escapes the allowlist --------

POLICY = build_config(
    {
        "upstream": {"url": "http://p"},
        "keys": {"api": {"value": "k1"}, "native": {"value": "k2"}},
        "native_api": {"allow": ["Feeds_GetFeeds"]},
        "clients": [
            {
                "name": "c",
                "tokens": ["sha256:" + token_hash("t")],
                "rules": [
                    {"native": ["Feeds_GetFeeds"], "key": "native"},
                    {"paths": ["/api/**"], "key": "api"},
                ],
            }
        ],
    },
    env={},
)
FORMATS = ["json", "xml", "soap", "jsonp", "json2", "native", "yaml", "Json.xml", "js%6Fn", "%78ml", "x"]
UNRESERVED_TEXT = "abcdefjlmnopsxyzJSONXML0123456789-._~"


def _any_case(text: str, flips: list[bool]) -> str:
    return "".join(
        c.upper() if flip else c.lower() for c, flip in zip(text, flips + [False] * len(text), strict=False)
    )


@st.composite
def native_like_targets(draw: st.DrawFn) -> tuple[bytes, str]:
    base = draw(
        st.one_of(st.sampled_from(FORMATS), st.text(alphabet=UNRESERVED_TEXT, min_size=1, max_size=8))
    )
    fmt = _any_case(base, draw(st.lists(st.booleans(), max_size=8)))
    method = draw(
        st.one_of(
            st.sampled_from(["Users_GetUsers", "Configuration_SetValue", "ApiKeys_GetApiKeys", "X"]),
            st.from_regex(r"[A-Za-z0-9_]{1,16}", fullmatch=True),
        ).filter(lambda m: m.casefold() != "feeds_getfeeds")
    )
    suffix = draw(st.sampled_from(["", "/", ".json", ".xml", "/x", "/.", ";x", "%2Fx", ".", "?key=1"]))
    return f"/api/{fmt}/{method}{suffix}".encode("ascii"), fmt


@settings(max_examples=1500, deadline=None)
@given(case=native_like_targets(), verb=st.sampled_from(["GET", "POST"]))
def test_api_wildcard_never_allows_an_unlisted_native_method(case: tuple[bytes, str], verb: str) -> None:
    """Whatever the format segment, its case or the suffix: refused, or a documented non-native family."""
    raw, _ = case
    try:
        t = canonicalize(raw)
        decision = decide(POLICY.clients["c"], verb, t, POLICY)
    except GatewayError:
        return
    second = t.path.split("/")[2].casefold()
    assert (t.route, decision.key) == (Route.API, "api"), raw
    assert second in API_FAMILIES, raw


@pytest.mark.parametrize("raw", [b"/api/json/Feeds_GetFeeds", b"/API/JSON/feeds_getfeeds/", b"/api/js%6Fn/X"])
def test_json_format_still_reaches_the_allowlist(raw: bytes) -> None:
    t = canonicalize(raw)
    assert t.route is Route.NATIVE
    if t.native_method == "X":
        with pytest.raises(NativeMethodNotAllowed):
            decide(POLICY.clients["c"], "GET", t, POLICY)
    else:
        assert decide(POLICY.clients["c"], "GET", t, POLICY).key == "native"
