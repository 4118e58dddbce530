"""Property: for any generated request, either the gateway refuses it and ProGet sees nothing, or ProGet
sees exactly one request that carries no client credential, only the key the policy chose, on exactly
the path the policy approved. Checked against the real gateway process and the recording stand-in."""

from __future__ import annotations

import base64
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.canonical import FEED_PREFIXES, canonicalize
from gateway.credentials import SCANNED_FEED_TYPES, BodyKind, body_kind, find_credentials
from gateway.errors import GatewayError
from gateway.framing import check_head
from gateway.policy import decide
from gateway.settings import load_config, token_hash
from tests.e2e.conftest import KEY_NATIVE, KEY_PUSH, KEY_READ, TOKEN_CI, TOKEN_READER, Gateway
from tests.e2e.rawhttp import request

PIECES = [
    "api",
    "API",
    "json",
    "Json",
    "soap",
    "reference",
    "Feeds_GetFeeds",
    "Users_GetUsers",
    "feeds%5Fgetfeeds",
    "nuget",
    "npm",
    "internal",
    "packages",
    "upload",
    "__standin",
    "echo",
    ".",
    "..",
    "%2e",
    "%2E%2e",
    "%2f",
    "%5c",
    "\\",
    "%00",
    "%u002e",
    "%25",
    "%252e",
    ";x",
    ":",
    "@scope%2fname",
    "",
    "x.tgz",
    "%C0%AE",
    "~",
]
TOKENS = [TOKEN_CI, TOKEN_READER, "pgw_unknown_" + "c" * 20]
HEADER_CHANNELS = [
    "Authorization: Bearer {}",
    "Authorization: Basic {b}",
    "Authorization: {}",
    "X-ApiKey: {}",
    "x_apikey: {}",
    "X-NuGet-ApiKey: {}",
]
QUERY_CHANNELS = ["key={}", "API_Key={}", "KEY={}", "k%65y={}"]


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, list[tuple[str, str]], bytes]:
    method = draw(st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]))
    path = "/" + "/".join(draw(st.lists(st.sampled_from(PIECES), min_size=1, max_size=5)))
    headers: list[tuple[str, str]] = []
    for channel in draw(st.lists(st.sampled_from(HEADER_CHANNELS), max_size=2)):
        token = draw(st.sampled_from(TOKENS))
        line = channel.format(token, b=base64.b64encode(f"u:{token}".encode()).decode())
        name, _, value = line.partition(": ")
        headers.append((name, value))
    query = [
        c.format(draw(st.sampled_from(TOKENS)))
        for c in draw(st.lists(st.sampled_from(QUERY_CHANNELS), max_size=2))
    ]
    query += draw(st.lists(st.sampled_from(["a=1", "Feed_Name=x", "b"]), max_size=2))
    target = path + ("?" + "&".join(query) if query else "")
    body = b""
    if method in ("POST", "PUT", "PATCH") and draw(st.booleans()):
        kind = draw(st.sampled_from(["json", "form"]))
        token = draw(st.sampled_from(TOKENS))
        if kind == "json":
            headers.append(("Content-Type", "application/json"))
            body = json.dumps({"API_Key": token, "x": 1} if draw(st.booleans()) else {"x": 1}).encode()
        else:
            headers.append(("Content-Type", "application/x-www-form-urlencoded"))
            body = (f"key={token}&x=1" if draw(st.booleans()) else "x=1").encode()
    return method, target, headers, body


def expected_key(
    gateway: Gateway, method: str, target: str, headers: list[tuple[str, str]], body: bytes
) -> tuple[str, str]:
    """What the policy approves, computed in-process with the same config: (path, key value)."""
    config = load_config(gateway.config_path, env={"E2E_KEY_PUSH": KEY_PUSH})
    raw_headers = [(b"host", b"h")] + [(n.lower().encode(), v.encode()) for n, v in headers]
    if body:
        raw_headers.append((b"content-length", str(len(body)).encode()))
    head = check_head(method, raw_headers, config.settings.limits)
    t = canonicalize(target.encode(), max_target_bytes=config.settings.limits.max_target_bytes)
    kind = body_kind(t, head)
    creds = find_credentials(
        raw_headers, t, body if kind is not BodyKind.STREAM else None, kind, config.settings.limits
    )
    name = config.token_index[token_hash(creds.token or "")].client
    decision = decide(config.clients[name], method, t, config)
    return t.path, config.keys[decision.key].x_apikey.decode()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(req=requests())
def test_refused_or_clean(
    gateway_session: Gateway, req: tuple[str, str, list[tuple[str, str]], bytes]
) -> None:
    gateway = gateway_session
    gateway.standin.clear()
    method, target, headers, body = req
    response = request(gateway.url, method, target, headers, body)
    records = list(gateway.standin.requests)
    if response.header("x-gateway-error"):
        assert records == [], (target, response.status)
        return
    assert len(records) == 1, (target, response.status, response.body[:200])
    rec = records[0]
    # On feed endpoints a body is package content, not a key channel (ProGet reads none there), so it
    # passes as sent; everywhere else a key-bearing body must arrive without the client's token.
    prefix = rec.raw_path.split("/")[1].lower()
    feed = prefix in FEED_PREFIXES and prefix not in SCANNED_FEED_TYPES
    blob = (
        rec.raw_path + rec.query + json.dumps(rec.headers) + ("" if feed else rec.body_head.decode("latin-1"))
    )
    for token in TOKENS:
        assert token not in blob
        assert base64.b64encode(f"u:{token}".encode()).decode() not in blob
    assert {value for _, value in rec.credentials} <= {KEY_READ, KEY_PUSH, KEY_NATIVE}
    try:
        path, key = expected_key(gateway, method, target, headers, body)
    except GatewayError as error:  # pragma: no cover - would mean gateway forwarded what policy refuses
        raise AssertionError(f"gateway forwarded {target!r} that the policy refuses: {error.code}") from None
    assert rec.raw_path == path
    assert rec.header("x-apikey") == [key]
