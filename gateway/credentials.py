"""Find the client's credential in every channel ProGet or a package client could use.

Channels: ``Authorization`` (Bearer, Basic with the token as password, or a raw token as Cargo sends
it), ``X-ApiKey`` (also as ProGet's ``user:password`` pseudo-key, which pgutil sends for
``--username/--password``), ``X-NuGet-ApiKey`` (header names compared after folding ``_`` to ``-``,
since some servers treat them alike), query ``key``/``API_Key``, urlencoded form ``key`` and the JSON root
``API_Key``. The same token repeated is one credential (NuGet sends Basic and X-NuGet-ApiKey
together); different values are ambiguous and refused, because the gateway and ProGet could pick
different ones. So is a key field in a spelling or position ProGet might or might not read
(:func:`gateway.payloads.classify_name`), and a body whose media type two servers would read as
different kinds (:func:`gateway.media.classify`).

The result carries the query and the inspected body with every credential removed: finding a
credential and cutting it out are one scan, so nothing found can be forgotten when forwarding.
"""

from __future__ import annotations

import binascii
import re
from base64 import b64decode
from enum import Enum
from typing import NamedTuple

from gateway.canonical import Route, Target
from gateway.errors import ContentTypeNotAllowed, CredentialAmbiguous, CredentialMalformed
from gateway.framing import Head
from gateway.media import MediaKind, classify
from gateway.memo import BoundedMemo
from gateway.payloads import scan_form, scan_json, scan_query
from gateway.settings import Limits


class BodyKind(Enum):
    """How the request body travels: streamed untouched, or read (capped) and rewritten."""

    STREAM = "stream"
    FORM = "form"
    JSON = "json"


class Credentials(NamedTuple):
    token: str | None = None
    sources: tuple[str, ...] = ()  # where the token was found; never the value
    query: bytes = b""  # the query string without credential parameters
    body: bytes | None = None  # the inspected body without credential fields (None when streamed)

    def __repr__(self) -> str:
        return f"Credentials(token={'<redacted>' if self.token else None}, sources={self.sources!r})"


def _normalize(name: bytes) -> bytes:
    return name.replace(b"_", b"-")


TOKEN_HEADERS = frozenset({b"authorization", b"x-apikey", b"x-nuget-apikey"})


def _is_credential_header(name: bytes) -> bool:
    """Every header that is, or could be read as, a credential (any case, ``_`` read as ``-``); all
    of them are stripped. Asked of every header of every request: remembered per name."""
    n = _normalize(name.lower())
    return n in TOKEN_HEADERS or n in (b"cookie", b"proxy-authorization") or b"apikey" in n or b"api-key" in n


is_credential_header = BoundedMemo(_is_credential_header)


# Feed prefixes whose HTTP APIs (asset directories, Universal package imports) read ``key``/``API_Key``
# from form and JSON bodies like /api/ does (proget-facts.md §1): their bodies of those types are scanned.
SCANNED_FEED_TYPES = frozenset({"endpoints", "upack"})


_INSPECTED = {MediaKind.FORM: BodyKind.FORM, MediaKind.JSON: BodyKind.JSON}


def body_kind(target: Target, head: Head) -> BodyKind:
    """Decide, from the head alone, whether the body must be inspected for ProGet's key fields.

    ProGet reads keys from form and JSON bodies on its HTTP API; feed endpoints do not, and their
    bodies (npm publishes, NuGet pushes) are large, so they stream. Anything on a non-feed route that
    could hold a key but cannot be inspected (multipart, compressed) is refused rather than forwarded.
    The media type is classified by :func:`gateway.media.classify` (a type two readers would read
    differently is refused there): ``application/json; x=x-www-form-urlencoded`` is JSON.
    """
    feed = target.route is Route.FEED
    if feed and target.feed_type not in SCANNED_FEED_TYPES:
        return BodyKind.STREAM
    media = classify(head.content_type)
    if media is MediaKind.MULTIPART:
        # Form fields of a multipart body are read like a form's: only package feeds may stream one.
        raise ContentTypeNotAllowed("multipart bodies are accepted only on package feed endpoints.")
    kind = _INSPECTED.get(media)
    if kind is None:
        if target.route is Route.NATIVE and head.has_body:
            # The Native API reads parameters (and API_Key) from whatever body it gets: only bodies we
            # can scan may pass.
            raise ContentTypeNotAllowed("Native API bodies must be JSON or an urlencoded form.")
        return BodyKind.STREAM
    if head.content_encoding is not None and head.content_encoding.strip().lower() != b"identity":
        raise ContentTypeNotAllowed("form and JSON bodies must not be content-encoded.")
    return kind


def find_credentials(
    headers: list[tuple[bytes, bytes]], target: Target, body: bytes | None, kind: BodyKind, limits: Limits
) -> Credentials:
    """Collect every credential occurrence; return the single token (or none) and the stripped parts."""
    found = _from_headers(headers)
    query = scan_query(target.query, max_params=limits.max_query_params) if target.query else None
    stripped_body = body
    if query is not None:
        found += query.found
    if body and kind is not BodyKind.STREAM:
        scan = (
            scan_json(body) if kind is BodyKind.JSON else scan_form(body, max_params=limits.max_form_params)
        )
        found += scan.found
        stripped_body = scan.stripped
    return Credentials(
        token=_single_value(found),
        sources=(found[0][0],) if len(found) == 1 else tuple(dict.fromkeys(source for source, _ in found)),
        query=query.stripped if query is not None else b"",
        body=stripped_body,
    )


def _single_value(found: list[tuple[str, str]] | tuple[tuple[str, str], ...]) -> str | None:
    if len(found) < 2:  # the usual request: one credential, nothing to compare
        return found[0][1] if found else None
    values = {value for _, value in found}
    if len(values) > 1:
        raise CredentialAmbiguous(f"Different credentials in: {', '.join(sorted({s for s, _ in found}))}.")
    return values.pop() if values else None


def _from_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for name, value in headers:
        n = _token_header(name)
        if n is None:
            continue
        if n == b"authorization":
            found.append(_authorization(value))
        elif n == b"x-apikey" and b":" in value:
            found.append(("header:x-apikey-userpass", _pseudo_key_secret(value)))
        else:
            found.append((f"header:{n.decode()}", _text(value, n.decode())))
    return found


def _decide_token_header(name: bytes) -> bytes | None:
    """The header's folded name if it is one of :data:`TOKEN_HEADERS`, else None."""
    n = _normalize(name)
    return n if n in TOKEN_HEADERS else None


_token_header = BoundedMemo(_decide_token_header)  # asked of every header of every request


def _pseudo_key_secret(value: bytes) -> str:
    """``X-ApiKey: user:password``, ProGet's pseudo-key, read like Basic. Gateway tokens and JWTs hold
    no ``:``, so a value with one is never a token of its own."""
    return _user_password_secret(_text(value, "X-ApiKey"), "X-ApiKey user:password")


def _user_password_secret(pair: str, what: str) -> str:
    """The secret of a ``user:password`` pair: the password, or the user name when it is empty."""
    user, _, password = pair.partition(":")
    if not user and not password:
        raise CredentialMalformed(f"The {what} credential is empty.")
    return password or user


_PRINTABLE = re.compile(rb"[\x21-\x7e]+")


def _text(value: bytes, where: str) -> str:
    """The credential as text when it is printable ASCII. One regular expression, not a test per byte:
    the per-byte generator cost ~30 µs for an 800-byte JWT, 8 % of a JWT client's request."""
    text = value.strip()
    if _PRINTABLE.fullmatch(text) is None:
        raise CredentialMalformed(f"The {where} credential is empty or not printable ASCII.")
    return text.decode("ascii")


def _authorization(value: bytes) -> tuple[str, str]:
    scheme, _, rest = value.strip().partition(b" ")
    kind = scheme.lower()
    if kind == b"bearer":
        return "header:authorization-bearer", _text(rest, "Bearer")
    if kind == b"basic":
        return "header:authorization-basic", _basic_secret(rest)
    if rest.strip():
        raise CredentialMalformed("Only Bearer, Basic or a raw token are accepted in Authorization.")
    return "header:authorization-raw", _text(scheme, "Authorization")


def _basic_secret(encoded: bytes) -> str:
    """The password of a Basic credential (any username); the username when the password is empty."""
    try:
        decoded = b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise CredentialMalformed("The Basic credential is not valid base64 of UTF-8 text.") from None
    return _text(_user_password_secret(decoded, "Basic").encode("utf-8", "surrogateescape"), "Basic")
