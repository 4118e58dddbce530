"""Table-driven tests of request-target canonicalization: what is accepted as what, what is refused why."""

from __future__ import annotations

import pytest

from gateway.canonical import FEED_PREFIXES, Route, Target, canonicalize
from gateway.errors import (
    GatewayError,
    NativeApiBlocked,
    NativePathInvalid,
    PathNotCanonical,
    TargetNotOriginForm,
    TargetTooLong,
)

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
    (b"/api/jsonx/X", ("/api/jsonx/X", A, None, None, None)),
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
