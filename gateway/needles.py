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
  undone on the haystack instead: percent-decoding (twice, and once more after a JSON unescape) and
  JSON ``\\u``, ``\\"``, ``\\\\`` and ``\\/`` escapes. These only run when the haystack holds a
  ``%`` or a ``\\``, so ordinary traffic pays for one ``lower()`` and one substring search per needle.

Everything is compared lowercased: case never hides a secret (hex and the raw token in any case), and a
lowercased base64 needle from a real token (tens of characters) is still far too specific to match by
accident.
"""

from __future__ import annotations

import re
from base64 import b64encode
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

MIN_FORM = 6  # an encoded form shorter than this (from a very short secret) would match by accident
_JSON_ESCAPE = re.compile(rb'\\(?:u([0-9a-f]{4})|(["\\/]))')
_MAX_DECODES = 3  # percent, percent again, JSON — in any order


def forms(secret: bytes) -> frozenset[bytes]:
    """The lowercased needles for one secret: raw, hex, base64 (both alphabets, every alignment)."""
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


def decodings(data: bytes) -> list[bytes]:
    """``data`` lowercased, plus each reading of it with percent and JSON escapes undone (lowercased)."""
    seen = [data.lower()]
    frontier = seen[:]
    for _ in range(_MAX_DECODES):
        frontier = [d for text in frontier for d in _decode_once(text) if d not in seen]
        if not frontier:
            break
        seen += frontier
    return seen


def _decode_once(text: bytes) -> list[bytes]:
    out = []
    if b"%" in text:
        out.append(unquote_to_bytes(text).lower())
    if b"\\" in text:
        out.append(_JSON_ESCAPE.sub(_unescape, text).lower())
    return out


def _unescape(match: re.Match[bytes]) -> bytes:
    if match.group(2):
        return match.group(2)
    return chr(int(match.group(1), 16)).encode("utf-8", "surrogatepass")


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

    @classmethod
    def of(cls, secrets: Iterable[bytes], *, compiled: bool = False) -> Needles:
        found = tuple({f for s in secrets if s for f in forms(s)})
        return cls(found, _compile(found) if compiled and found else None)

    def adding(self, secret: bytes) -> Needles:
        """These needles and ``secret``'s (the same object when ``secret`` is already covered)."""
        if not secret or secret.lower() in self.forms:
            return self
        return Needles(tuple({*self.forms, *forms(secret)}))

    def __bool__(self) -> bool:
        return bool(self.forms)

    def __repr__(self) -> str:
        return f"Needles(<{len(self.forms)} forms>)"

    def found_in(self, data: bytes) -> bool:
        """Whether any form of any secret occurs in ``data`` or in any of its decodings."""
        if not self.forms:
            return False
        text = data.lower()
        if self._hit(text):
            return True
        if b"%" not in text and b"\\" not in text:
            return False  # the usual case: nothing to decode
        return any(self._hit(decoded) for decoded in decodings(text)[1:])

    def _hit(self, text: bytes) -> bool:
        if self.pattern is not None:
            return self.pattern.search(text) is not None
        for form in self.forms:  # noqa: SIM110 - a plain loop: any() over a generator is 2x slower here
            if form in text:
                return True
        return False


def _compile(found: tuple[bytes, ...]) -> re.Pattern[bytes]:
    return re.compile(b"|".join(re.escape(f) for f in sorted(found, key=len, reverse=True)))
