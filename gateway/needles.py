"""Every spelling of a secret that ProGet, a server in front of it or a log reader could decode.

One implementation, used three ways: the egress guard (:mod:`gateway.egress`) looks for the client's
credential in what is about to be sent, the redactor (:mod:`gateway.redact`) for it in what is about
to be logged, and the response filter (:func:`gateway.rewrite.rewrite_response_headers`) for ProGet's
key in what is about to reach a client.

Two halves, so that neither has to enumerate what the other covers:

- *encodings* the attacker cannot apply piecemeal are precomputed as needles: the secret itself, its
  hex, and its base64 (standard and url-safe) at each of the three byte alignments, so that the secret
  is found inside ``base64("api:" + secret)`` or any longer encoded string. At an alignment the first
  and last characters also depend on the neighbouring bytes; those unstable edge characters are cut.
- *escapes* the attacker can apply to any subset of characters (``t%6fken``, ``t\\u006fken``) are
  undone on the haystack instead: percent-decoding (up to three times: twice by the client, once by
  the form or query holding it) and every JSON escape: ``\\u`` (a surrogate pair as the one character
  it spells), ``\\"``, ``\\\\``, ``\\/`` and the one-letter ``\\b \\f \\n \\r \\t``. These only
  run when the haystack holds a ``%`` or a ``\\``, so ordinary traffic pays for one ``lower()`` and one
  search per needle (when the needles are compiled, one case-insensitive search and no ``lower()``). A
  haystack shorter than the shortest needle is not searched at all: no decoding makes text longer.

Everything is compared lowercased: case never hides a secret (hex and the raw token in any case), and a
lowercased base64 needle from a real token (tens of characters) is still far too specific to match by
accident.
"""

from __future__ import annotations

import functools
import re
from base64 import b64encode
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from urllib.parse import unquote_to_bytes

MIN_FORM = 6  # an encoded form shorter than this (from a very short secret) would match by accident
# A surrogate pair first: JSON spells a character beyond the BMP as two escapes, read as one.
_PAIR = rb"\\u(d[89ab][0-9a-f]{2})\\u(d[c-f][0-9a-f]{2})|"
_JSON_ESCAPE = re.compile(_PAIR + rb'\\(?:u([0-9a-f]{4})|(["\\/bfnrt]))')
# The same escapes read by a looser reader, for whom ``\\`` is not an escape: in ``\\u003a`` it sees
# ``\`` and then ``\u003a``, a colon. A log reader can read a secret out that way, so we do too.
_LOOSE_ESCAPE = re.compile(_PAIR + rb'\\(?:u([0-9a-f]{4})|(["/bfnrt]))')
_SHORT = {b"b": b"\b", b"f": b"\f", b"n": b"\n", b"r": b"\r", b"t": b"\t"}  # JSON's one-letter escapes
_PERCENT_DECODES = 3  # twice by the client, once more by the form or query it sits in
_JSON_DECODES = 1


CACHED_SECRET_BYTES = 2048  # gateway tokens, ProGet keys, service-account JWTs; longer ones are rebuilt


def forms(secret: bytes) -> frozenset[bytes]:
    """The lowercased needles for one secret: raw, hex, base64 (both alphabets, every alignment).

    Cached for secrets up to :data:`CACHED_SECRET_BYTES`: a client presents the same credential on
    every request, and building its forms was ~5 µs of each one (bench/README.md). Credentials are
    read before anyone is authenticated, so the cache is bounded by entry size as well as by count
    (about 4 MiB at most): unbounded, 4,096 distinct 30 KB values from strangers held 850 MiB."""
    return _cached_forms(secret) if len(secret) <= CACHED_SECRET_BYTES else _forms(secret)


@functools.lru_cache(maxsize=256)
def _cached_forms(secret: bytes) -> frozenset[bytes]:
    return _forms(secret)


def _forms(secret: bytes) -> frozenset[bytes]:
    raw = secret.lower()
    found = {raw, secret.hex().encode("ascii")}
    for prefix in range(3):
        stable = _aligned_base64(secret, prefix)
        if len(stable) >= MIN_FORM:
            found.add(stable.lower())
            found.add(stable.translate(_URLSAFE).lower())
    return frozenset(found)


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _aligned_base64(secret: bytes, prefix: int) -> bytes:
    """The characters of base64(``prefix`` bytes + secret) that depend on the secret's bytes alone."""
    encoded = b64encode(b"\0" * prefix + secret)
    first = -(-prefix * 8 // 6)  # the first character whose 6 bits all come after the prefix
    end = (prefix + len(secret)) * 8 // 6  # characters whose 6 bits all lie inside the secret
    return encoded[first:end]


def decodings(data: bytes) -> Iterator[bytes]:
    """``data`` lowercased, then each reading of it with percent escapes undone up to three times and
    JSON escapes once (as JSON reads them, and as a reader who takes ``\\\\`` for two characters
    does), in any order (lowercased).

    Yielded one at a time, depth first, so that at most five copies of a large body are alive at once;
    a reading already seen (by hash) is not searched again. A 1 MiB body made of nothing but escapes
    costs ~0.35 s of CPU, paid only by an authenticated, allowed request; ordinary bodies ~20 ms/MiB.
    """
    yield from _walk(data.lower(), _PERCENT_DECODES, _JSON_DECODES, set())


def _walk(text: bytes, percent: int, escapes: int, seen: set[int]) -> Iterator[bytes]:
    """:func:`decodings`, depth first. A module function, not a closure over itself: a nested
    recursive function is a reference cycle, one for the collector per haystack searched."""
    if hash(text) in seen:
        return
    seen.add(hash(text))
    yield text
    if percent and b"%" in text:
        yield from _walk(unquote_to_bytes(text).lower(), percent - 1, escapes, seen)
    if escapes and b"\\" in text:
        yield from _walk(_JSON_ESCAPE.sub(_unescape, text).lower(), percent, escapes - 1, seen)
        yield from _walk(_LOOSE_ESCAPE.sub(_unescape, text).lower(), percent, escapes - 1, seen)


def _unescape(match: re.Match[bytes]) -> bytes:
    high, low, single, char = match.groups()
    if high:  # a surrogate pair: one character beyond the BMP, in UTF-8 as a reader writes it
        return chr(0x10000 + ((int(high, 16) - 0xD800) << 10) + int(low, 16) - 0xDC00).encode("utf-8")
    if char:
        return _SHORT.get(char, char)
    code = int(single, 16)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8, kept as a lone surrogate (surrogateescape):
        return bytes((code - 0xDC00,))  # how the audit line spells a field's raw byte, read back
    return chr(code).encode("utf-8", "surrogatepass")


@dataclass(frozen=True, slots=True)
class Needles:
    """The forms of a set of secrets; built once per request (client credentials) or per key.

    With ``compiled`` the forms are also one regular expression: one pass in C over each haystack,
    several times faster than a substring search per form (a ProGet key is checked against every
    response header). Compiling costs ~0.3 ms, so only long-lived needles (keys, at config freeze)
    are compiled; a request's are searched form by form.
    """

    forms: tuple[bytes, ...] = ()
    pattern: re.Pattern[bytes] | None = None
    shortest: int = 0  # the shortest form's length: no decoding of a shorter haystack can hold one

    @classmethod
    def of(cls, secrets: Iterable[bytes], *, compiled: bool = False) -> Needles:
        found = tuple({f for s in secrets if s for f in forms(s)})
        return cls(found, _compile(found) if compiled and found else None, _shortest(found))

    def adding(self, secret: bytes) -> Needles:
        """These needles and ``secret``'s (the same object when ``secret`` is already covered)."""
        if not secret or secret.lower() in self.forms:
            return self
        found = tuple({*self.forms, *forms(secret)})
        return Needles(found, None, _shortest(found))

    def __bool__(self) -> bool:
        return bool(self.forms)

    def __repr__(self) -> str:
        return f"Needles(<{len(self.forms)} forms>)"

    def found_in(self, data: bytes) -> bool:
        """Whether any form of any secret occurs in ``data`` or in any of its decodings."""
        if not self.forms or len(data) < self.shortest:
            return False  # lowering keeps the length and every decoding shortens: no form fits
        if self.pattern is not None:  # case-insensitive: no lowered copy of every response header
            if self.pattern.search(data) is not None:
                return True
        elif self._hit(data.lower()):
            return True
        if b"%" not in data and b"\\" not in data:
            return False  # the usual case: nothing to decode
        return any(self._hit(decoded) for decoded in islice(decodings(data), 1, None))

    def _hit(self, text: bytes) -> bool:
        if self.pattern is not None:
            return self.pattern.search(text) is not None
        for form in self.forms:  # noqa: SIM110 - a plain loop: any() over a generator is 2x slower here
            if form in text:
                return True
        return False


NO_NEEDLES = Needles()  # nothing presented (immutable: one for every request)


def needles_of(secrets: tuple[bytes, ...]) -> Needles:
    """``Needles.of(secrets)``, cached like :func:`forms` and bounded the same way (values read before
    authentication: at most :data:`CACHED_SECRET_BYTES` in all per entry, 256 entries): a client
    presents the same credential on every request, and rebuilding the set was ~2 µs of each."""
    if not secrets:
        return NO_NEEDLES
    if sum(map(len, secrets)) <= CACHED_SECRET_BYTES:
        return _cached_needles(secrets)
    return Needles.of(secrets)


@functools.lru_cache(maxsize=256)
def _cached_needles(secrets: tuple[bytes, ...]) -> Needles:
    return Needles.of(secrets)


def _shortest(found: tuple[bytes, ...]) -> int:
    return min(map(len, found), default=0)


def _compile(found: tuple[bytes, ...]) -> re.Pattern[bytes]:
    """One alternation, longest first; ASCII case-insensitive like ``bytes.lower()`` (half the cost of
    lowering a header and searching it)."""
    alternatives = b"|".join(re.escape(f) for f in sorted(found, key=len, reverse=True))
    return re.compile(alternatives, re.IGNORECASE)
