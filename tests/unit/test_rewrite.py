from __future__ import annotations

from base64 import b64encode
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.canonical import Route, Target
from gateway.credentials import Credentials
from gateway.errors import HostInvalid
from gateway.framing import Head
from gateway.rewrite import (
    CLIENT_IDENTITY_HEADERS,
    HeaderTable,
    _site_table,
    client_view,
    is_stripped,
    rewrite_request,
    rewrite_response_headers,
)
from gateway.settings import build_config, token_hash

RAW: dict[str, Any] = {
    "upstream": {"url": "http://proget.internal:8624"},
    "keys": {"read": {"value": "the-key"}},
    "clients": [{"name": "ci", "tokens": ["sha256:" + token_hash("t")], "rules": [{"key": "read"}]}],
}
CONFIG = build_config(RAW, env={})
KEY = CONFIG.keys["read"]
HEAD = Head(
    content_length=None, chunked=False, host="gw.example:8080", content_type=None, content_encoding=None
)


def trusted_config(**extra: Any) -> Any:
    return build_config({**RAW, "trusted_proxies": ["10.0.0.0/8"], **extra}, env={})


def test_view_ignores_forwarded_headers_from_untrusted_peers() -> None:
    headers = [
        (b"x-forwarded-for", b"6.6.6.6"),
        (b"x-forwarded-host", b"evil"),
        (b"x-forwarded-proto", b"https"),
    ]
    view = client_view("192.0.2.7", "http", HEAD, headers, CONFIG)
    assert (view.client_ip, view.forwarded_for, view.proto, view.host) == (
        "192.0.2.7",
        "192.0.2.7",
        "http",
        HEAD.host,
    )
    assert view.public_origin == "http://gw.example:8080"


@given(
    last=st.integers(1, 254),
    forwarded=st.lists(st.sampled_from([b"x-forwarded-for", b"x-forwarded-host", b"x-forwarded-proto"])),
    public=st.sampled_from([None, "https://gw.corp"]),
)
def test_without_trusted_proxies_the_view_is_an_untrusted_peers(
    last: int, forwarded: list[bytes], public: str | None
) -> None:
    """The short way taken when no proxy is trusted gives what the full reading gives a peer that is
    not one of the trusted proxies."""
    peer, headers = f"192.0.2.{last}", [(name, b"6.6.6.6") for name in forwarded]
    extra = {"public_url": public} if public else {}
    plain = build_config({**RAW, **extra}, env={})
    assert client_view(peer, "http", HEAD, headers, plain) == client_view(
        peer, "http", HEAD, headers, trusted_config(**extra)
    )


def test_view_trusts_configured_proxies() -> None:
    headers = [
        (b"x-forwarded-for", b"203.0.113.9, 10.1.1.1"),
        (b"x-forwarded-host", b"pkgs.corp"),
        (b"x-forwarded-proto", b"https"),
    ]
    view = client_view("10.0.0.2", "http", HEAD, headers, trusted_config())
    assert view.client_ip == "203.0.113.9"
    assert view.forwarded_for == "203.0.113.9, 10.1.1.1, 10.0.0.2"
    assert (view.proto, view.host, view.public_origin) == ("https", "pkgs.corp", "https://pkgs.corp")
    with pytest.raises(HostInvalid):
        client_view("10.0.0.2", "http", HEAD, [(b"x-forwarded-host", b"a/b")], trusted_config())


def test_public_url_wins() -> None:
    view = client_view("192.0.2.7", "http", HEAD, [], trusted_config(public_url="https://gw.corp/"))
    assert view.public_origin == "https://gw.corp"


def test_request_rewrite_strips_and_injects() -> None:
    headers = [
        (b"host", b"gw.example:8080"),
        (b"authorization", b"Bearer t"),
        (b"x_apikey", b"t"),
        (b"cookie", b"s=1"),
        (b"connection", b"x-hop"),
        (b"x-hop", b"1"),
        (b"x-http-method-override", b"DELETE"),
        (b"content-type", b"application/json"),
        (b"content-length", b"20"),
        (b"x-keep", b"yes"),
    ]
    t = Target("/api/json/Feeds_GetFeeds", b"key=t&a=1", Route.NATIVE, "Feeds_GetFeeds", None, None)
    creds = Credentials(token="t", sources=("header:authorization-bearer",), query=b"a=1", body=b"{}")
    view = client_view("192.0.2.7", "http", HEAD, headers, CONFIG)
    req = rewrite_request("POST", t, headers, HEAD, creds, KEY, view, CONFIG, "rid")
    assert req.target == "/api/json/Feeds_GetFeeds?a=1"
    assert req.head.startswith(
        b"POST /api/json/Feeds_GetFeeds?a=1 HTTP/1.1\r\ncontent-type: application/json\r\n"
    )
    assert req.body == b"{}"
    assert req.headers == [
        ("content-type", "application/json"),
        ("x-keep", "yes"),
        ("host", "proget.internal:8624"),  # the upstream's authority, never the client's Host
        ("x-forwarded-for", "192.0.2.7"),
        ("x-forwarded-proto", "http"),
        ("x-forwarded-host", "gw.example:8080"),
        ("x-request-id", "rid"),
        ("x-apikey", "the-key"),
        ("content-length", "2"),
    ]


def test_feed_routes_also_get_basic_and_nuget_push_key() -> None:
    t = Target("/nuget/internal/", b"", Route.FEED, None, "nuget", "internal")
    view = client_view("192.0.2.7", "http", HEAD, [], CONFIG)
    req = rewrite_request("PUT", t, [], HEAD, Credentials(), KEY, view, CONFIG, "rid")
    basic = "Basic " + b64encode(b"api:the-key").decode()
    assert [h for h in req.headers if h[0] in ("x-apikey", "authorization", "x-nuget-apikey")] == [
        ("x-apikey", "the-key"),
        ("authorization", basic),
        ("x-nuget-apikey", "the-key"),
    ]
    assert req.body is None


def test_response_headers() -> None:
    raw = [
        (b"Content-Type", b"text/plain"),
        (b"Content-Length", b"5"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Connection", b"close, X-Hop"),
        (b"X-Hop", b"1"),
        (b"Set-Cookie", b"ProGetSession=1"),
        (b"WWW-Authenticate", b'Basic realm="ProGet"'),
        (b"X-Echo", b"prefix the-key suffix"),
        (b"X-Echo-Basic", b64encode(b"api:the-key")),
        (b"Location", b"http://PROGET.internal:8624/feeds/x?y=1"),
        (b"Content-Location", b"http://proget.internal:86245/other"),
        (b"ETag", b'"e"'),
    ]
    out = rewrite_response_headers(raw, KEY, 401, "http://proget.internal:8624", "https://gw.corp")
    assert out == [
        (b"content-type", b"text/plain"),
        (b"content-length", b"5"),
        (b"location", b"https://gw.corp/feeds/x?y=1"),
        (b"content-location", b"http://proget.internal:86245/other"),
        (b"etag", b'"e"'),
        (b"www-authenticate", b'Basic realm="proget-gateway"'),
    ]


# --- feed clients (issue 3): what docker/OCI, Maven and npm clients rely on -------------------------


def test_docker_upload_headers_pass_both_ways() -> None:
    """Chunked blob uploads: Range/Content-Range go up, the registry's upload headers come back."""
    headers = [
        (b"host", b"gw.example:8080"),
        (b"authorization", b"Basic " + b64encode(b"api:t")),
        (b"content-type", b"application/octet-stream"),
        (b"content-range", b"0-1048575"),
        (b"range", b"bytes=0-99"),
        (b"content-length", b"1048576"),
    ]
    head = Head(1048576, False, "gw.example:8080", b"application/octet-stream", None)
    t = Target("/v2/docker-int/app/blobs/uploads/u1", b"_state=s", Route.FEED, None, "v2", "docker-int")
    view = client_view("192.0.2.7", "http", head, headers, CONFIG)
    creds = Credentials(token="t", sources=("header:authorization-basic",), query=b"_state=s")
    req = rewrite_request("PATCH", t, headers, head, creds, KEY, view, CONFIG, "rid")
    assert ("content-range", "0-1048575") in req.headers
    assert ("range", "bytes=0-99") in req.headers
    assert req.target == "/v2/docker-int/app/blobs/uploads/u1?_state=s"
    raw = [
        (b"Docker-Distribution-Api-Version", b"registry/2.0"),
        (b"Docker-Upload-Uuid", b"u1"),
        (b"Range", b"0-1048575"),
        (b"Location", b"http://proget.internal:8624/v2/docker-int/app/blobs/uploads/u1?_state=t"),
    ]
    out = rewrite_response_headers(raw, KEY, 202, "http://proget.internal:8624", "http://gw.example:8080")
    assert out == [
        (b"docker-distribution-api-version", b"registry/2.0"),
        (b"docker-upload-uuid", b"u1"),
        (b"range", b"0-1048575"),
        (b"location", b"http://gw.example:8080/v2/docker-int/app/blobs/uploads/u1?_state=t"),
    ]


def test_upstream_bearer_challenge_becomes_the_gateways_basic_one() -> None:
    """ProGet's docker challenge sends clients to its own /v2/_auth token service; a token from there
    would reach the gateway as an unknown credential. The gateway authenticates upstream itself, so the
    client is only ever asked for Basic (which every docker client answers with its gateway token)."""
    raw = [(b"WWW-Authenticate", b'Bearer realm="http://proget.internal:8624/v2/_auth",service="proget"')]
    out = rewrite_response_headers(raw, KEY, 401, "http://proget.internal:8624", "http://gw.example:8080")
    assert out == [(b"www-authenticate", b'Basic realm="proget-gateway"')]


def test_relative_and_foreign_locations_are_left_alone() -> None:
    raw = [(b"Location", b"/v2/f/app/blobs/uploads/u1"), (b"Content-Location", b"https://cdn.example/x")]
    out = rewrite_response_headers(raw, KEY, 202, "http://proget.internal:8624", "https://gw.corp")
    assert out == [
        (b"location", b"/v2/f/app/blobs/uploads/u1"),
        (b"content-location", b"https://cdn.example/x"),
    ]


def test_public_url_names_the_origin_proget_links_to() -> None:
    """Behind an ingress that is not a trusted proxy, ProGet must still build links to the public URL."""
    config = build_config({**RAW, "public_url": "https://proget-gw.corp.example/"}, env={})
    view = client_view("192.0.2.7", "http", HEAD, [], config)
    t = Target("/nuget/internal/v3/index.json", b"", Route.FEED, None, "nuget", "internal")
    req = rewrite_request("GET", t, [], HEAD, Credentials(token="t"), KEY, view, config, "rid")
    sent = dict(req.headers)
    assert sent["host"] == "proget-gw.corp.example"  # never the client's Host: see _gateway_headers
    assert (sent["x-forwarded-proto"], sent["x-forwarded-host"]) == ("https", "proget-gw.corp.example")


# --- client identity and routing headers (issue 8 §4) ---------------------------------------------


def _sent(headers: list[tuple[bytes, bytes]], config: Any = CONFIG) -> list[tuple[str, str]]:
    t = Target("/api/x", b"", Route.API, None, None, None)
    view = client_view("192.0.2.7", "http", HEAD, headers, config)
    return rewrite_request("GET", t, headers, HEAD, Credentials(), KEY, view, config, "rid").headers


@pytest.mark.parametrize(
    "row",
    [*sorted(CLIENT_IDENTITY_HEADERS.exact), *(p + b"uri" for p in CLIENT_IDENTITY_HEADERS.prefixes)],
)
def test_each_identity_header_row_is_stripped(row: bytes) -> None:
    """Every row of the table, in any case and with ``_`` for ``-``, never reaches ProGet as sent."""
    spellings = [row, row.upper(), row.replace(b"-", b"_"), row.title()]
    sent = _sent([(s, b"spoofed") for s in spellings] + [(b"x-keep", b"yes")])
    assert ("x-keep", "yes") in sent
    assert [n for n, v in sent if v == "spoofed"] == []


@pytest.mark.parametrize(
    "name",
    [b"x-forwarded-uri", b"x-forwarded-user", b"x-auth-request-user", b"x-gateway-foo", b"X_Gateway_Client"],
)
def test_seen_identity_headers_never_reach_proget(name: bytes) -> None:
    """Seen: these reached ProGet as the client sent them."""
    assert [v for _, v in _sent([(name, b"admin")]) if v == "admin"] == []


def test_the_gateways_own_forwarded_headers_replace_the_clients() -> None:
    headers = [
        (b"x-forwarded-for", b"6.6.6.6"),
        (b"x-forwarded-proto", b"https"),
        (b"x-forwarded-host", b"e"),
    ]
    sent = _sent(headers)
    assert [(n, v) for n, v in sent if n.startswith("x-forwarded-")] == [
        ("x-forwarded-for", "192.0.2.7"),
        ("x-forwarded-proto", "http"),
        ("x-forwarded-host", "gw.example:8080"),
    ]


def test_trusted_proxy_forwarded_headers_are_read_not_forwarded() -> None:
    config = trusted_config()
    headers = [(b"x-forwarded-for", b"203.0.113.9"), (b"x-forwarded-uri", b"/x"), (b"x-real-ip", b"1.2.3.4")]
    t = Target("/api/x", b"", Route.API, None, None, None)
    view = client_view("10.0.0.2", "http", HEAD, headers, config)
    sent = rewrite_request("GET", t, headers, HEAD, Credentials(), KEY, view, config, "rid").headers
    assert ("x-forwarded-for", "203.0.113.9, 10.0.0.2") in sent
    assert {n for n, _ in sent} & {"x-forwarded-uri", "x-real-ip"} == set()


def test_site_specific_names_and_prefixes_are_stripped() -> None:
    config = build_config({**RAW, "strip_request_headers": ["X-Corp-User", "x_site_*"]}, env={})
    headers = [
        (b"x-corp-user", b"1"),
        (b"x_corp_user", b"2"),
        (b"x-site-role", b"3"),
        (b"X-SITE-", b"4"),
        (b"x-corp-users", b"kept"),
    ]
    assert [v for _, v in _sent(headers, config) if v in ("1", "2", "3", "4", "kept")] == ["kept"]


def test_header_table_parse() -> None:
    table = HeaderTable.parse(["A_B", "c*"])
    assert table == HeaderTable(frozenset({b"a-b"}), (b"c",))
    assert table.matches(b"A-b") and table.matches(b"cookie-x") and not table.matches(b"ab")


NAME_PIECES = st.sampled_from(
    [
        b"x-",
        b"forwarded",
        b"_",
        b"-",
        b"apikey",
        b"api-key",
        b"host",
        b"connection",
        b"x-site-",
        b"user",
        b"a",
    ]
)
HEADER_NAMES = st.lists(st.builds(b"".join, st.lists(NAME_PIECES, max_size=6)), max_size=40)


@given(names=HEADER_NAMES, cased=st.lists(st.booleans(), max_size=40))
def test_the_remembered_decision_is_the_fresh_one(names: list[bytes], cased: list[bool]) -> None:
    """Whatever names arrive, in whatever order and case, the remembered answer is the rule's."""
    names = [n.upper() if up else n for n, up in zip(names, cased + [False] * len(names), strict=False)]
    site = ("x_site_*", "X-Corp-User")
    remembering, table = _site_table(site), HeaderTable.parse(site)
    for name in names * 2:
        assert remembering(name) == is_stripped(name, table)


TRACE_VALUE = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)


@given(
    parent=TRACE_VALUE,
    state=TRACE_VALUE,
    repeated=st.sampled_from([None, b"traceparent", b"tracestate"]),
    peer=st.sampled_from(["192.0.2.7", "10.1.2.3"]),
)
def test_client_trace_context_passes_only_from_trusted_proxies(
    parent: str, state: str, repeated: bytes | None, peer: str
) -> None:
    """Untrusted: never forwarded. Trusted, tracing off: passed through as sent, unless a header came
    twice (no context then). Tracing on: only the gateway's own context, whoever sent what."""
    config = trusted_config()
    headers = [(b"host", b"gw"), (b"traceparent", parent.encode()), (b"tracestate", state.encode())]
    headers += [(repeated, b"x")] if repeated else []
    t = Target("/api/x", b"", Route.OTHER, None, None, None)
    view = client_view(peer, "http", HEAD, headers, config)
    sent = rewrite_request("GET", t, headers, HEAD, Credentials(), KEY, view, config, "rid").headers
    traced = [(n, v) for n, v in sent if n in ("traceparent", "tracestate")]
    if peer.startswith("10.") and repeated is None:
        assert traced == [("traceparent", parent), ("tracestate", state)]
    else:
        assert traced == []
    ours = [("traceparent", "00-" + "a" * 32 + "-" + "b" * 16 + "-01")]
    on = rewrite_request("GET", t, headers, HEAD, Credentials(), KEY, view, config, "rid", ours).headers
    assert [(n, v) for n, v in on if n in ("traceparent", "tracestate")] == ours
