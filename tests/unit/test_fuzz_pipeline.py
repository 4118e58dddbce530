"""Fuzz target: canonicalize → find credentials → rewrite → egress guard, over generated requests.

Each example is a request that presents a token the usual way (``X-ApiKey``) and hides the same token
once more somewhere else — a header, a query parameter's name or value, a path segment, a form field or
any position in a JSON document — in one of the encodings a reader could undo. The property: the
request is refused, or the bytes that would be sent to ProGet (target, headers, body) contain the token
in none of those forms, judged by an independent decoder (``tests/leak_oracle.py``).

CI runs ``PGW_FUZZ_EXAMPLES`` examples (default 300, well under a minute). For a long run::

    PGW_FUZZ_EXAMPLES=200000 .venv/bin/pytest tests/unit/test_fuzz_pipeline.py -q -p no:cacheprovider
"""

from __future__ import annotations

import base64
import json
import os
import urllib.parse
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.canonical import canonicalize
from gateway.credentials import body_kind, find_credentials
from gateway.egress import check_egress, presented
from gateway.errors import GatewayError
from gateway.framing import check_head
from gateway.rewrite import client_view, rewrite_request
from gateway.settings import build_config, token_hash
from gateway.upstream import UpstreamRequest
from tests.leak_oracle import leaked_form

EXAMPLES = int(os.environ.get("PGW_FUZZ_EXAMPLES", "300"))
CONFIG = build_config(
    {
        "upstream": {"url": "http://proget.internal:8624"},
        "keys": {"read": {"value": "the-proget-key-0123"}},
        "clients": [{"name": "ci", "tokens": ["sha256:" + token_hash("unused")], "rules": [{"key": "read"}]}],
    },
    env={},
)
KEY = CONFIG.keys["read"]

tokens = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=16, max_size=48)
ENCODINGS = (
    "raw",
    "upper",
    "swapcase",
    "percent",
    "percent_some",
    "percent_twice",
    "base64",
    "base64_user",
    "base64_url",
    "base64_embedded",
    "json_u",
    "json_u_some",
    "hex",
    "hex_upper",
)


def encode(token: str, how: str, data: st.DataObject) -> str:
    """``token`` spelled the way ``how`` names (partial escapes choose their characters by ``data``;
    like any encoder, they always escape their own escape characters)."""
    raw = token.encode()
    some = data.draw(st.lists(st.booleans(), min_size=len(token), max_size=len(token)), label="escaped")
    table: dict[str, Any] = {
        "raw": lambda: token,
        "upper": lambda: token.upper(),
        "swapcase": lambda: token.swapcase(),
        "percent": lambda: "".join(f"%{b:02X}" for b in raw),
        "percent_some": lambda: "".join(
            f"%{ord(c):02x}" if s or c == "%" else c for c, s in zip(token, some, strict=True)
        ),
        "percent_twice": lambda: "".join(f"%25{b:02X}" for b in raw),
        "base64": lambda: base64.b64encode(raw).decode(),
        "base64_user": lambda: base64.b64encode(b"api:" + raw).decode(),
        "base64_url": lambda: base64.urlsafe_b64encode(b"x" + raw).decode().rstrip("="),
        "base64_embedded": lambda: base64.b64encode(b"prefix-" + raw + b"-suffix").decode(),
        "json_u": lambda: "".join(f"\\u{b:04x}" for b in raw),
        "json_u_some": lambda: "".join(
            f"\\u{ord(c):04X}" if s or c in '\\"' else c for c, s in zip(token, some, strict=True)
        ),
        "hex": lambda: raw.hex(),
        "hex_upper": lambda: raw.hex().upper(),
    }
    return str(table[how]())


def _q(text: str) -> str:
    """Percent-encode what a query or path may not hold raw (existing escapes kept as they are)."""
    return urllib.parse.quote(text, safe="%")


def _json_with(hidden: str, data: st.DataObject) -> bytes:
    """A JSON document with ``hidden`` as a member name or a string value, at any depth."""
    doc: Any = json.loads(json.dumps(hidden))  # a JSON string value: \\u escapes survive as text
    for _ in range(data.draw(st.integers(0, 3), label="depth")):
        doc = data.draw(st.sampled_from([[doc], {"n": doc}, {"x": 1, "arr": [1, doc]}]), label="wrap")
    as_name = data.draw(st.booleans(), label="as member name")
    root = {hidden: 1} if as_name else {"feed": "f", "value": doc}
    text = json.dumps(root)
    if "\\u" in hidden:  # keep the attacker's escapes literal in the document, not re-escaped
        text = text.replace("\\\\u", "\\u")
    return text.encode()


def place(
    token: str, how: str, where: str, data: st.DataObject
) -> tuple[str, list[tuple[bytes, bytes]], bytes]:
    """The target, extra headers and body of a request hiding the encoded token at ``where``."""
    hidden = data.draw(st.sampled_from(["", "a", "x:", "Bearer "]), label="prefix") + encode(token, how, data)
    target, headers, body = "/api/promotions/promote", [(b"content-type", b"application/json")], b"{}"
    if where == "header":
        name = data.draw(st.sampled_from([b"x-custom", b"referer", b"user-agent", b"x-trace", b"accept"]))
        headers.append((name, hidden.encode()))
    elif where == "query_value":
        target += "?name=" + _q(hidden)
    elif where == "query_name":
        target += "?" + _q(hidden) + "=1"
    elif where == "path":
        target = "/api/packages/feed/versions/" + urllib.parse.quote(hidden, safe="")
    elif where == "form":
        headers = [(b"content-type", b"application/x-www-form-urlencoded")]
        body = urllib.parse.urlencode({"feed": "f", "note": hidden}).encode()
    else:
        body = _json_with(hidden, data)
    return target, headers, body


def sent_bytes(request: UpstreamRequest) -> bytes:
    return request.head + (request.body or b"")  # what UpstreamClient writes


def through_the_pipeline(target: str, headers: list[tuple[bytes, bytes]], body: bytes) -> UpstreamRequest:
    """The stages of gateway/pipeline.py that build and guard the upstream request (no network)."""
    limits = CONFIG.settings.limits
    head = check_head("POST", headers, limits)
    parsed = canonicalize(target.encode("latin-1"), max_target_bytes=limits.max_target_bytes)
    credentials = find_credentials(headers, parsed, body, body_kind(parsed, head), limits)
    view = client_view("127.0.0.1", "http", head, headers, CONFIG)
    request = rewrite_request("POST", parsed, headers, head, credentials, KEY, view, CONFIG, "rid")
    secrets = presented(headers)
    if credentials.token is not None:
        secrets = secrets.adding(credentials.token.encode())
    check_egress(request, secrets)
    return request


PLACES = ("header", "query_value", "query_name", "path", "form", "json")


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(token=tokens, how=st.sampled_from(ENCODINGS), where=st.sampled_from(PLACES), data=st.data())
def test_a_presented_token_never_leaves_in_any_form(
    token: str, how: str, where: str, data: st.DataObject
) -> None:
    target, extra, body = place(token, how, where, data)
    headers = [(b"host", b"gw.example"), (b"x-apikey", token.encode()), *extra]
    headers.append((b"content-length", str(len(body)).encode()))
    try:
        request = through_the_pipeline(target, headers, body)
    except GatewayError:
        return  # refused: nothing was sent
    assert leaked_form(sent_bytes(request), token.encode()) is None


def test_a_clean_request_passes_the_guard() -> None:
    """The property above is not vacuous: a request without a hidden token is forwarded."""
    token = "pgw_fuzz_" + "c" * 30
    body = b'{"feed":"f","name":"n"}'
    headers = [(b"host", b"gw"), (b"x-apikey", token.encode()), (b"content-type", b"application/json")]
    request = through_the_pipeline(
        "/api/promotions/promote?x=1", [*headers, (b"content-length", b"23")], body
    )
    assert request.body == body and leaked_form(sent_bytes(request), token.encode()) is None
