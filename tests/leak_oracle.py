"""An independent check that a secret is absent from bytes in every form a reader could decode.

Written without gateway/needles.py on purpose: it decodes the haystack (every base64 and hex run at
every offset) instead of encoding the secret, so a gap in the needle builder is not shared by the test
that is meant to find it.
"""

from __future__ import annotations

import base64
import binascii
import re
import urllib.parse

_B64_RUN = re.compile(rb"[A-Za-z0-9+/_\-]{4,}")
_HEX_RUN = re.compile(rb"[0-9A-Fa-f]{4,}")
_JSON_U = re.compile(rb"\\u([0-9A-Fa-f]{4})")


def _unescape_json(data: bytes) -> bytes:
    data = _JSON_U.sub(lambda m: chr(int(m.group(1), 16)).encode("utf-8", "surrogatepass"), data)
    return data.replace(b"\\/", b"/")


def readings(data: bytes) -> list[bytes]:
    """``data`` with percent escapes undone up to twice and JSON escapes undone, in every order."""
    out = [data]
    for _ in range(3):
        for text in list(out):
            for decoded in (urllib.parse.unquote_to_bytes(text), _unescape_json(text)):
                if decoded not in out:
                    out.append(decoded)
    return out


def _base64_decodings(text: bytes) -> list[bytes]:
    found = []
    for run in _B64_RUN.findall(text):
        std = run.replace(b"-", b"+").replace(b"_", b"/")
        for offset in range(4):
            piece = std[offset:]
            piece = piece[: len(piece) - len(piece) % 4]
            try:
                found.append(base64.b64decode(piece, validate=True))
            except (binascii.Error, ValueError):
                continue
    return found


def _hex_decodings(text: bytes) -> list[bytes]:
    found = []
    for run in _HEX_RUN.findall(text):
        for offset in range(2):
            piece = run[offset:]
            found.append(bytes.fromhex(piece[: len(piece) - len(piece) % 2].decode()))
    return found


def leaked_form(data: bytes, secret: bytes) -> str | None:
    """The name of the first form in which ``secret`` can be read from ``data``, or None."""
    needle = secret.lower()
    for text in readings(data):
        if needle in text.lower():
            return "raw"
        if any(needle in d.lower() for d in _base64_decodings(text)):
            return "base64"
        if any(needle in d.lower() for d in _hex_decodings(text)):
            return "hex"
    return None
