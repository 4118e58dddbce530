"""The egress guard: the last look at a request before it leaves for ProGet.

Stripping (:mod:`gateway.credentials`, :mod:`gateway.rewrite`) removes every credential channel we
know of. This module does not trust that list: it scans exactly what will be sent — the request
target, every header name and value, and the inspected body — for every credential value the client
presented, in every spelling :mod:`gateway.needles` knows (raw in any case, percent-encoded once or
twice, base64 at any alignment in either alphabet, JSON ``\\u`` escapes, hex). One hit and nothing is
forwarded: the request is refused with ``credential_leak_blocked`` and audited. A client that hides its
own token in a header, a parameter or a JSON value gets a 400 instead of handing it to ProGet.

A streamed body (package uploads) is not held, so it is not scanned; it is never an inspected route's
body, where ProGet reads credentials.
"""

from __future__ import annotations

import binascii
from base64 import b64decode
from collections.abc import Iterable

from gateway.credentials import is_credential_header
from gateway.errors import CredentialLeakBlocked
from gateway.needles import MIN_FORM, Needles, needles_of
from gateway.upstream import UpstreamRequest

_AUTH_SCHEMES = (b"authorization", b"proxy-authorization")


def check_egress(request: UpstreamRequest, secrets: Needles) -> None:
    """Raise :class:`CredentialLeakBlocked` if any form of a presented credential would be sent."""
    if not secrets:
        return
    if secrets.found_in(request.head) or (request.body is not None and secrets.found_in(request.body)):
        raise CredentialLeakBlocked()


def presented(headers: Iterable[tuple[bytes, bytes]]) -> Needles:
    """The needles for every credential value the client presented.

    The credential headers are read leniently here, without raising, so that a request refused
    before its credential was parsed still has its values redacted from the log; a value shorter than
    :data:`gateway.needles.MIN_FORM` is ignored. The token :func:`gateway.credentials.find_credentials`
    settles on (it may come from the query or the body) is added with ``Needles.adding``, whatever its
    length.
    """
    values = [
        v for name, value in headers if is_credential_header(name) for v in _values(name.lower(), value)
    ]
    return needles_of(tuple(v for v in values if len(v) >= MIN_FORM))


def _values(name: bytes, value: bytes) -> list[bytes]:
    if name == b"cookie":
        return []  # stripped as a whole; its values are a browser session's, not this client's token
    value = value.strip()
    if name.replace(b"_", b"-") == b"x-apikey" and b":" in value:
        user, _, password = value.partition(b":")  # ProGet's user:password pseudo-key (pgutil)
        return [value, password or user]
    if name.replace(b"_", b"-") not in _AUTH_SCHEMES:
        return [value]
    scheme, _, rest = value.partition(b" ")
    rest = rest.strip()
    if scheme.lower() != b"basic":
        return [rest or scheme]
    return [rest, *_basic_parts(rest)]


def _basic_parts(encoded: bytes) -> list[bytes]:
    try:
        user, _, password = b64decode(encoded, validate=True).partition(b":")
    except (binascii.Error, ValueError):
        return []
    return [password or user]
