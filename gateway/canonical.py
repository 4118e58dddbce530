"""Request target → the one canonical path the gateway decides on and then forwards, byte for byte.

Threat model: the policy allows or refuses by path (Native API method name, feed name, prefix). If
ProGet's server (Kestrel today, HTTP.sys/IIS historically) could read the forwarded path differently
from us - through percent-decoding, dot segments, encoded or back slashes, ``%u`` escapes, overlong
UTF-8, trailing dots, ``;`` parameters, double encoding - then a request we approved as one thing runs
as another. So every form with more than one plausible reading is refused (400), and the harmless
variants (escaped unreserved characters, lower-case hex) are rewritten to one spelling *before* the
decision. The string we return is a fixed point: canonicalizing it again gives the same result.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Final, NamedTuple
from urllib.parse import unquote_to_bytes

from gateway.errors import (
    NativeApiBlocked,
    NativePathInvalid,
    PathNotCanonical,
    TargetNotOriginForm,
    TargetTooLong,
)

__all__ = ["API_FAMILIES", "FEED_PREFIXES", "Route", "Target", "canonicalize"]


class Route(StrEnum):
    """What kind of ProGet endpoint a path reaches; the policy treats each kind differently."""

    NATIVE = "native"  # /api/json/<Method>
    API = "api"  # /api, /api/<x>, or a path under a documented family (API_FAMILIES)
    FEED = "feed"  # a feed endpoint prefix (FEED_PREFIXES)
    OTHER = "other"  # UI, /health, anything else


FEED_PREFIXES: frozenset[str] = frozenset(
    {
        "nuget", "npm", "pypi", "v2", "maven2", "debian", "rpm", "apk", "rubygems", "helm", "conda",
        "cran", "conan", "cargo", "composer", "pub", "vsix", "upack", "symbols", "endpoints",
    }
)  # fmt: skip

# The second segment of every documented /api/ path that is NOT the Native API (proget-facts.md, "API
# families", plus legacy endpoints older tools still call). Any other /api/<x>/<more> could be a Native
# API call in a format we do not inspect (ProGet routes /api/<format>/<Method>), so it is refused.
API_FAMILIES: frozenset[str] = frozenset(
    {
        "packages", "promotions", "repackaging", "management", "storage", "containers", "sca",
        "licenses", "security", "api-keys", "settings", "package-deployment", "dependencies",
        "webhooks", "connector-health",
    }
)  # fmt: skip


class Target(NamedTuple):
    """A request target after canonicalization: what the policy sees is what ProGet receives."""

    path: str  # canonical path, ASCII; EXACTLY the bytes that will be forwarded
    query: bytes  # raw query as received (without the '?'); b"" if none
    route: Route
    native_method: str | None  # NATIVE only: the method name as written (case kept)
    feed_type: str | None  # FEED: the lowercased prefix; "api" for /api/packages/<feed>/...
    feed: str | None  # the feed name when the path names one, else None


# --- precomputed tables (nothing is compiled or built per request) --------------------------------

# Rule 3: a query byte that is a control, a space or non-ASCII.
_QUERY_BAD: Final = re.compile(rb"[\x00-\x20\x7f-\xff]")
# Rule 4: anything that is not an RFC 3986 pchar, '%' or '/'.
_PATH_RAW_BAD: Final = re.compile(rb"[^A-Za-z0-9\-._~!$&'()*+,;=:@%/]")
# Rule 10: the first two segments, after decoding; no trailing '.' (IIS strips it). Matched from the
# start of the path: each segment ends the path or is followed by '/'; '*+' never gives back a byte.
_HEAD_SEGMENTS: Final = re.compile(r"/[A-Za-z0-9._~-]*+(?<!\.)(?:\Z|/[A-Za-z0-9._~-]*+(?<!\.)(?:\Z|/))")
# Rule 11: a Native API method name, ASCII only (an explicit class, never \w).
_NATIVE_METHOD: Final = re.compile(r"[A-Za-z0-9_]+")
# Rule 5: '%25' followed by two hex digits, i.e. a second round of decoding would change the path.
_DOUBLE_ESCAPE: Final = re.compile(r"%25[0-9A-Fa-f]{2}")
# The encoded separators of rule 9, as they appear in the canonical (upper-case) spelling.
_ENCODED_SEPARATOR: Final = re.compile(r"%2F|%5C")

_HEX: Final = "0123456789abcdefABCDEF"
_UNRESERVED: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _escape_tables() -> tuple[dict[bytes, str], frozenset[bytes], frozenset[bytes]]:
    """Every spelling of a two-hex-digit escape → its canonical text; controls and non-ASCII apart."""
    canonical: dict[bytes, str] = {}
    controls: set[bytes] = set()
    non_ascii: set[bytes] = set()
    for hi in _HEX:
        for lo in _HEX:
            spelling = (hi + lo).encode("ascii")
            value = int(spelling, 16)
            if value < 0x20 or value == 0x7F:
                controls.add(spelling)
                continue
            if value >= 0x80:
                non_ascii.add(spelling)
            canonical[spelling] = chr(value) if value in _UNRESERVED else f"%{value:02X}"
    return canonical, frozenset(controls), frozenset(non_ascii)


_ESCAPES, _CONTROL_ESCAPES, _NON_ASCII_ESCAPES = _escape_tables()


# --- the public entry point ------------------------------------------------------------------------


def canonicalize(raw_target: bytes, *, max_target_bytes: int = 8192) -> Target:
    """Check ``raw_target`` (the request-line target, verbatim) and return its one canonical reading.

    Raises a ``GatewayError`` subclass for every target that ProGet's servers could read differently
    from us, so the caller can decide on ``Target.path`` and forward ``Target.path.encode("ascii")``
    knowing that both sides mean the same resource and, for the Native API, the same method.
    """
    path_bytes, query = _split_target(raw_target, max_target_bytes)
    path = _canonical_path(path_bytes)
    segments = _checked_segments(path)
    route, native_method, feed_type, feed = _classify(segments)
    if route is not Route.FEED and "%" in path and _ENCODED_SEPARATOR.search(path):
        raise PathNotCanonical("An encoded '/' or '\\' is only accepted inside a feed path.")
    if route is Route.FEED and "%" in path:
        _check_encoded_dot_parts(segments)
    return Target(path, query, route, native_method, feed_type, feed)


# --- steps -----------------------------------------------------------------------------------------


def _split_target(raw_target: bytes, max_target_bytes: int) -> tuple[bytes, bytes]:
    """Rules 1-3: size, origin-form, no fragment, a query that is plain printable ASCII."""
    if len(raw_target) > max_target_bytes:
        raise TargetTooLong(f"The request target is longer than {max_target_bytes} bytes.")
    if not raw_target.startswith(b"/"):
        raise TargetNotOriginForm()
    if b"#" in raw_target:
        raise PathNotCanonical("A request target may not contain '#'.")
    path, _, query = raw_target.partition(b"?")
    if query and _QUERY_BAD.search(query):
        raise PathNotCanonical("The query contains a control byte, a space or a non-ASCII byte.")
    return path, query


def _canonical_path(path: bytes) -> str:
    """Rules 4-7: only pchar bytes raw; escapes well formed, not controls, not double, valid UTF-8.

    Escapes of unreserved characters become the character (``%5F`` → ``_``) so that no two spellings
    of one name reach the policy; every other escape is kept, in upper case.
    """
    if _PATH_RAW_BAD.search(path):
        raise PathNotCanonical("The path contains a byte that must be percent-encoded.")
    if b"%" not in path:
        return path.decode("ascii")
    pieces = path.split(b"%")
    out = [pieces[0].decode("ascii")]
    non_ascii = False
    for piece in pieces[1:]:
        spelling = piece[:2]
        text = _ESCAPES.get(spelling)
        if text is None:
            if spelling in _CONTROL_ESCAPES:
                raise PathNotCanonical("The path contains an encoded control character.")
            raise PathNotCanonical("The path contains a '%' that is not followed by two hex digits.")
        non_ascii = non_ascii or spelling in _NON_ASCII_ESCAPES
        out.append(text)
        out.append(piece[2:].decode("ascii"))
    canonical = "".join(out)
    # Checked on the result: '%25%34%31' only becomes the double escape '%2541' after decoding.
    if "%25" in canonical and _DOUBLE_ESCAPE.search(canonical):
        raise PathNotCanonical("The path is percent-encoded twice.")
    if non_ascii:
        _check_utf8(canonical)
    return canonical


def _check_utf8(canonical: str) -> None:
    """Rule 7: overlong forms and surrogates are how '.' and '/' get smuggled past a decoder."""
    try:
        unquote_to_bytes(canonical).decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        raise PathNotCanonical("The decoded path is not valid UTF-8.") from None


def _checked_segments(path: str) -> list[str]:
    """Rules 8 and 10: no empty or dot segments; plain, dot-free-ending first two segments."""
    if "//" in path:
        raise PathNotCanonical("The path contains an empty segment.")
    segments = path[1:].split("/")
    if "/." in path and ("." in segments or ".." in segments):
        raise PathNotCanonical("The path contains a '.' or '..' segment.")
    if not _HEAD_SEGMENTS.match(path):
        raise PathNotCanonical(
            "The first two path segments may only contain letters, digits and '-._~' "
            "and may not end with '.'."
        )
    return segments


def _check_encoded_dot_parts(segments: list[str]) -> None:
    """Beyond rule 8: '..%2F' and '..%5C' inside a feed segment.

    A server that decodes ``%2F``/``%5C`` into a separator before removing dot segments (HTTP.sys
    treats ``\\`` as ``/``) would read ``/npm/f/..%5C..%5Capi%5Cjson%5CX`` as ``/api/json/X``.
    """
    for segment in segments[2:]:
        if "%" in segment:
            parts = _ENCODED_SEPARATOR.split(segment)
            if len(parts) > 1 and ("." in parts or ".." in parts):
                raise PathNotCanonical("A feed path segment hides a '.' or '..' behind an encoded '/'.")


def _classify(segments: list[str]) -> tuple[Route, str | None, str | None, str | None]:
    """Rule 11: (route, native_method, feed_type, feed), case-insensitive like .NET routing."""
    seg0 = segments[0].lower()
    seg1 = segments[1].lower() if len(segments) > 1 else ""
    if seg0 == "api":
        return _classify_api(segments, seg1)
    if seg0 == "reference" and seg1.startswith("api"):
        raise NativeApiBlocked()
    if seg0 in FEED_PREFIXES:
        feed = segments[1] if seg1 else None
        if seg0 == "v2" and seg1.startswith("_"):
            feed = None  # registry-level endpoints: /v2/_catalog, /v2/_auth
        return Route.FEED, None, seg0, feed
    return Route.OTHER, None, None, None


def _classify_api(segments: list[str], seg1: str) -> tuple[Route, str | None, str | None, str | None]:
    """``/api/<family>/...`` is the HTTP API; anything else that names a method is the Native API.

    ProGet serves the Native API as ``/api/<format>/<Method>``. Only ``json`` is documented and only
    its bodies are inspected, so a method path under any other second segment that is not a documented
    family is refused: an unknown format could read parameters (and ``API_Key``) from a body we never
    parsed, and the allowlist was written for JSON calls.
    """
    if seg1.startswith("soap"):
        raise NativeApiBlocked()
    if seg1 == "json":
        return Route.NATIVE, _native_method(segments), None, None
    if seg1 == "packages" and len(segments) > 2 and segments[2]:
        return Route.API, None, "api", segments[2]
    if seg1 in API_FAMILIES or len(segments) < 3 or segments[2:] == [""]:
        return Route.API, None, None, None  # a family, or /api/<x>[/]: no method is named
    raise NativePathInvalid(
        "The second segment is not a documented ProGet API family, and Native API calls are "
        "/api/json/<Method>."
    )


def _native_method(segments: list[str]) -> str:
    """Exactly ``/api/json/<Method>`` or ``/api/json/<Method>/``: the method is what ProGet calls."""
    shape_ok = len(segments) == 3 or (len(segments) == 4 and segments[3] == "")
    if not shape_ok or not _NATIVE_METHOD.fullmatch(segments[2]):
        raise NativePathInvalid()
    return segments[2]
