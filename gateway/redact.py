"""The one redactor: every client-derived string passes through it before it is written.

The audit writer checks every line over the bytes it is about to write (:func:`checked_line`), the
error handler every error detail (:func:`redact_error`) and every unexpected exception's message
(:func:`redact_exception`), so a value does not need to be recognised as sensitive where it is
produced: a token that reached the request path, a header-derived field or a claim is replaced all the
same. Two things are removed:

- userinfo in an absolute URL (``http://api:<token>@host/`` → ``http://***@host/``): it is a
  credential whatever its value, and it may be one the client never presented anywhere else;
- every credential value the client presented, in every form of :mod:`gateway.needles`. A form that is
  spelled out directly (raw in any case, hex, base64) is replaced where it stands; if the secret is still
  found after that (it was hidden behind percent or JSON escapes), the whole value is replaced.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from gateway.errors import GatewayError
from gateway.needles import Needles

PLACEHOLDER = "***"
_USERINFO = re.compile(r"([a-z][a-z0-9+.\-]*://)[^/?#\s]*@", re.IGNORECASE)


def redact(text: str, secrets: Needles) -> str:
    """``text`` with userinfo and every form of every presented secret replaced by ``***``."""
    if "@" in text:
        text = _USERINFO.sub(r"\1" + PLACEHOLDER + "@", text)
    if not secrets or not secrets.found_in(_bytes(text)):
        return text
    text = _pattern(secrets).sub(PLACEHOLDER, text)
    return PLACEHOLDER if secrets.found_in(_bytes(text)) else text


def checked_line(
    fields: dict[str, object], secrets: Needles, encode: Callable[[dict[str, object]], bytes]
) -> tuple[bytes, dict[str, object]]:
    """The line ``encode`` makes of ``fields``, checked over the very bytes that will be written, and
    the fields it was made of.

    The usual line holds no URL with an ``@`` and no form of a presented secret: one search over its
    bytes (JSON's escapes are read by :meth:`Needles.found_in`), and it is written as made. Otherwise
    every string field is redacted and the line made again. A secret that still shows spans fields (a
    credential crafted to look like the JSON between two values): then every string field is replaced.
    ``:``, ``/`` and ``@`` are never escaped in JSON, so a line without both ``://`` and ``@`` holds no
    userinfo in any field.
    """
    line = encode(fields)
    if not (b"@" in line and b"://" in line) and not (secrets and secrets.found_in(line)):
        return line, fields
    fields = {name: redact(v, secrets) if isinstance(v, str) else v for name, v in fields.items()}
    line = encode(fields)
    if secrets and secrets.found_in(line):
        fields = {name: PLACEHOLDER if isinstance(v, str) else v for name, v in fields.items()}
        line = encode(fields)
    return line, fields


def redact_error(error: GatewayError, secrets: Needles) -> GatewayError:
    """The error with its detail (the JSON body's and the exception's message) redacted, in place."""
    detail = redact(error.detail, secrets)
    if detail != error.detail:
        error.detail = detail
        error.args = (detail,)
    return error


def redact_exception(error: BaseException, secrets: Needles) -> None:
    """Redact the string arguments of an unexpected exception and of its causes, in place, before the
    server logs it with its traceback (a traceback shows messages, never local values)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        current.args = tuple(redact(a, secrets) if isinstance(a, str) else a for a in current.args)
        current = current.__cause__ or current.__context__


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _pattern(secrets: Needles) -> re.Pattern[str]:
    """Compiled only when a secret was found (rare): forms as text, longest first, any case."""
    longest_first = sorted(secrets.forms, key=len, reverse=True)
    alternatives = "|".join(re.escape(form.decode("utf-8", "surrogateescape")) for form in longest_first)
    return re.compile(alternatives, re.IGNORECASE)
