"""The credential channels of gateway/credentials.py read alike: ProGet's ``user:password`` pseudo-key in
``X-ApiKey`` (pgutil) is the same credential as Basic with that user and password, for any user and
token; the egress guard's needles cover the password alone."""

from __future__ import annotations

import string
from base64 import b64encode

from hypothesis import given
from hypothesis import strategies as st

from gateway.canonical import canonicalize
from gateway.credentials import BodyKind, Credentials, find_credentials
from gateway.egress import presented
from gateway.settings import Limits

PRINTABLE_NO_COLON = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters=":"), min_size=1
)
TARGET = canonicalize(b"/api/management/feeds/list")


def token_of(headers: list[tuple[bytes, bytes]]) -> str | None:
    return find_credentials(headers, TARGET, None, BodyKind.STREAM, Limits()).token


@given(user=PRINTABLE_NO_COLON, token=PRINTABLE_NO_COLON)
def test_pseudo_key_reads_like_basic(user: str, token: str) -> None:
    pseudo = [(b"x-apikey", f"{user}:{token}".encode())]
    basic = [(b"authorization", b"Basic " + b64encode(f"{user}:{token}".encode()))]
    assert token_of(pseudo) == token_of(basic) == token
    assert token_of(pseudo + basic) == token  # the same token twice is one credential


@given(user=PRINTABLE_NO_COLON)
def test_pseudo_key_without_password_is_the_user(user: str) -> None:
    assert token_of([(b"x-apikey", f"{user}:".encode())]) == user


@given(user=PRINTABLE_NO_COLON, token=st.text(alphabet="abcdefghij0123456789_", min_size=8, max_size=60))
def test_egress_needles_cover_the_password_alone(user: str, token: str) -> None:
    needles = presented([(b"x-apikey", f"{user}:{token}".encode())])
    assert needles.found_in(b"/api/x?q=" + token.encode())


@given(token=st.text(alphabet=string.ascii_lowercase + string.digits, min_size=12, max_size=40))
def test_found_credentials_show_no_token_when_printed(token: str) -> None:
    """A Credentials that reaches a log line, an f-string or a container's repr names no token."""
    token = "Z9" + token  # never a piece of the repr's own words
    found = Credentials(token=token, sources=("header:authorization-bearer",), body=token.encode())
    for shown in (repr(found), str(found), f"{found}", repr([found])):
        assert token not in shown and "<redacted>" in shown
