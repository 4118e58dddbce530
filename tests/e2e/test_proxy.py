"""The gateway core end to end: real gateway process, recording ProGet stand-in, real sockets."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from tests.e2e.conftest import KEY_NATIVE, KEY_PUSH, KEY_READ, TOKEN_CI, TOKEN_READER, Gateway
from tests.e2e.rawhttp import request

SECRETS = (TOKEN_CI, TOKEN_READER)


def only_request(gateway: Gateway):  # type: ignore[no-untyped-def]
    assert len(gateway.standin.requests) == 1, [r.raw_path for r in gateway.standin.requests]
    return gateway.standin.requests[0]


def assert_no_client_secret(rec) -> None:  # type: ignore[no-untyped-def]
    blob = rec.raw_path + rec.query + json.dumps(rec.headers) + rec.body_head.decode("latin-1")
    for secret in SECRETS:
        assert secret not in blob
        assert base64.b64encode(f"u:{secret}".encode()).decode() not in blob


def assert_mapped(rec, key: str) -> None:  # type: ignore[no-untyped-def]
    assert rec.header("x-apikey") == [key]
    assert rec.credentials == [("header:x-apikey", key)]
    assert rec.header("cookie") == []
    assert_no_client_secret(rec)


def basic(secret: str, user: str = "anyone") -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


# --- credential placement matrix -------------------------------------------------------------------

HEADER_CHANNELS = {
    "bearer": lambda t: [("Authorization", f"Bearer {t}")],
    "bearer-lower": lambda t: [("authorization", f"bearer {t}")],
    "basic": lambda t: [("Authorization", basic(t))],
    "basic-user-only": lambda t: [("Authorization", "Basic " + base64.b64encode(f"{t}:".encode()).decode())],
    "raw": lambda t: [("Authorization", t)],
    "x-apikey": lambda t: [("X-ApiKey", t)],
    "x-apikey-upper": lambda t: [("X-APIKEY", t)],
    "x_apikey-underscore": lambda t: [("X_ApiKey", t)],
    "x-nuget-apikey": lambda t: [("X-NuGet-ApiKey", t)],
    "basic+nuget-same": lambda t: [("Authorization", basic(t, "api")), ("X-NuGet-ApiKey", t)],
}
QUERY_CHANNELS = {
    "query-key": "key={t}",
    "query-KEY": "KEY={t}",
    "query-API_Key": "API_Key={t}",
    "query-api_key-encoded": "ap%69%5Fkey={t}",
}
CONTENT_TYPES = [None, "application/json", "application/x-www-form-urlencoded", "application/octet-stream"]
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


def body_for(content_type: str | None) -> bytes:
    if content_type == "application/json":
        return b'{"Feed_Name": "x", "n": 1.50}'
    if content_type == "application/x-www-form-urlencoded":
        return b"Feed_Name=x&n=1"
    return b"\x00\x01binary" if content_type else b""


@pytest.mark.parametrize("content_type", CONTENT_TYPES)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("channel", list(HEADER_CHANNELS) + list(QUERY_CHANNELS))
def test_credential_matrix(
    gateway: Gateway, client: httpx.Client, channel: str, method: str, content_type: str | None
) -> None:
    headers = HEADER_CHANNELS[channel](TOKEN_CI) if channel in HEADER_CHANNELS else []
    query = QUERY_CHANNELS[channel].format(t=TOKEN_CI) if channel in QUERY_CHANNELS else ""
    body = body_for(content_type) if method != "GET" else b""
    if content_type and body:
        headers.append(("Content-Type", content_type))
    headers.append(("Cookie", "ProGetSession=stolen"))
    target = "/__standin/echo?a=1" + (f"&{query}" if query else "") + "&b=2"
    response = request(gateway.url, method, target, headers, body)
    assert response.status == 200, response.body
    rec = only_request(gateway)
    assert_mapped(rec, KEY_READ)
    assert rec.raw_path == "/__standin/echo"
    assert rec.query == "a=1&b=2"
    assert rec.body_head == body
    if content_type and body:
        assert rec.header("content-type") == [content_type]


@pytest.mark.parametrize(
    ("content_type", "body", "forwarded"),
    [
        ("application/json", b'{"a": 1, "API_Key": "%s", "b": [1, 2]}', b'{"a": 1, "b": [1, 2]}'),
        ("application/json", b'{"API_KEY":"%s"}', b"{}"),
        (
            "application/json; charset=utf-8",
            b'{"api\\u005fkey": "%s", "z": "\xc3\xa9"}',
            b'{"z": "\xc3\xa9"}',
        ),
        ("application/x-www-form-urlencoded", b"Feed_Name=x&key=%s&n=2", b"Feed_Name=x&n=2"),
        ("Application/X-WWW-Form-URLEncoded", b"KEY=%s", b""),
    ],
)
def test_body_credentials_are_removed(
    gateway: Gateway, content_type: str, body: bytes, forwarded: bytes
) -> None:
    payload = body.replace(b"%s", TOKEN_CI.encode())
    response = request(
        gateway.url, "POST", "/api/json/Feeds_GetFeeds", [("Content-Type", content_type)], payload
    )
    assert response.status == 200, response.body
    rec = only_request(gateway)
    assert_mapped(rec, KEY_NATIVE)
    assert rec.body_head == forwarded
    assert rec.header("content-length") == [str(len(forwarded))]
    assert rec.header("content-type") == [content_type]


def test_same_token_twice_is_one_credential(gateway: Gateway) -> None:
    response = request(gateway.url, "GET", f"/__standin/echo?key={TOKEN_CI}", [("X-ApiKey", TOKEN_CI)])
    assert response.status == 200
    assert_mapped(only_request(gateway), KEY_READ)


@pytest.mark.parametrize(
    ("headers", "target", "body", "code"),
    [
        (
            [("Authorization", f"Bearer {TOKEN_CI}"), ("X-ApiKey", TOKEN_READER)],
            "/api/x",
            b"",
            "credential_ambiguous",
        ),
        ([("X-ApiKey", TOKEN_CI)], f"/api/x?key={TOKEN_READER}", b"", "credential_ambiguous"),
        ([("X-ApiKey", TOKEN_CI), ("X-ApiKey", TOKEN_READER)], "/api/x", b"", "credential_ambiguous"),
        (
            [("X-ApiKey", TOKEN_CI), ("Content-Type", "application/json")],
            "/api/x",
            f'{{"API_Key":"{TOKEN_READER}"}}'.encode(),
            "credential_ambiguous",
        ),
        ([("Authorization", "Basic !!notbase64")], "/api/x", b"", "credential_malformed"),
        ([("Authorization", "Negotiate abc def")], "/api/x", b"", "credential_malformed"),
        (
            [("X-ApiKey", TOKEN_CI), ("Content-Type", "application/json")],
            "/api/x",
            b'{"a":',
            "body_unparseable",
        ),
        (
            [("X-ApiKey", TOKEN_CI), ("Content-Type", "application/json")],
            "/api/x",
            b"{'a': 1}",
            "body_unparseable",
        ),
        (
            [("X-ApiKey", TOKEN_CI), ("Content-Type", "multipart/form-data; boundary=x")],
            "/api/x",
            b"--x--",
            "content_type_not_allowed",
        ),
        (
            [("X-ApiKey", TOKEN_CI), ("Content-Type", "application/json"), ("Content-Encoding", "gzip")],
            "/api/x",
            b"\x1f\x8b",
            "content_type_not_allowed",
        ),
        (
            [("X-ApiKey", TOKEN_CI), ("Content-Type", "application/json")],
            "/api/x",
            b" " * 70000,
            "body_too_large",
        ),
        (
            [("X-ApiKey", TOKEN_CI), ("Content-Type", "text/plain")],
            "/api/json/Feeds_GetFeeds",
            b'{"API_Key": "a-real-proget-key"}',
            "content_type_not_allowed",
        ),
        ([("X-ApiKey", TOKEN_CI)], "/api/json/Feeds_GetFeeds", b"API_Key=x", "content_type_not_allowed"),
        ([], "/api/management/feeds/list", b"", "credential_missing"),
        ([("X-ApiKey", "pgw_unknown")], "/api/x", b"", "token_unknown"),
        ([("X-ApiKey", TOKEN_READER)], "/api/x", b"x", "no_matching_rule"),
        ([("X-ApiKey", TOKEN_READER)], "/api/json/Feeds_GetFeeds", b"", "no_matching_rule"),
        ([("X-ApiKey", TOKEN_CI)], "/api/json/Users_CreateOrUpdateUser", b"", "native_method_not_allowed"),
    ],
)
def test_refusals_never_reach_upstream(
    gateway: Gateway, headers: list[tuple[str, str]], target: str, body: bytes, code: str
) -> None:
    method = "POST" if body else "GET"
    response = request(gateway.url, method, target, headers, body)
    assert response.header("x-gateway-error") == [code]
    error = response.json()
    assert error["error"] == code and error["request_id"] and error["detail"]
    assert gateway.standin.requests == []
    for secret in SECRETS:
        assert secret not in response.body.decode()
    if response.status == 401:
        assert response.header("www-authenticate") == ['Basic realm="proget-gateway"']
    audit = gateway.last_audit(error["request_id"])
    assert audit["reason"] == code and audit["status"] == response.status and audit["decision"] == "deny"


# --- Native API and path tricks ------------------------------------------------------------------

ALLOWED_NATIVE = [
    "/api/json/Feeds_GetFeeds",
    "/API/JSON/feeds_getfeeds",
    "/api/json/Feeds%5FGetFeeds",
    "/api/js%6Fn/Feeds_GetFeeds",
    "/api/json/Feeds_GetFeeds/",
]


@pytest.mark.parametrize("target", ALLOWED_NATIVE)
def test_allowed_native_method_is_forwarded_as_decided(gateway: Gateway, target: str) -> None:
    response = request(gateway.url, "POST", target + "?Feed_Name=x", [("X-ApiKey", TOKEN_CI)])
    assert response.status == 200, response.body
    rec = only_request(gateway)
    assert_mapped(rec, KEY_NATIVE)
    expected = target.replace("%5F", "_").replace("%6F", "o")
    assert rec.raw_path == expected
    assert rec.query == "Feed_Name=x"


BLOCKED = [
    ("/api/json/Users_GetUsers", 403),
    ("/API/Json/users_getusers", 403),
    ("/api/json/Users%5FGetUsers", 403),
    ("/api/json/Feeds_GetFeeds;Users_GetUsers", 400),
    ("/api/json/Feeds_GetFeeds/../Users_GetUsers", 400),
    ("/api/json/Feeds_GetFeeds/%2e%2e/Users_GetUsers", 400),
    ("/api//json/Users_GetUsers", 400),
    ("/api/./json/Users_GetUsers", 400),
    ("/api/x/../json/Users_GetUsers", 400),
    ("/api%2Fjson/Users_GetUsers", 400),
    ("/api\\json\\Users_GetUsers", 400),
    ("/api/json%2FUsers_GetUsers", 400),
    ("/api/json/Users_GetUsers%00", 400),
    ("/api/json/%u0055sers_GetUsers", 400),
    ("/api/json/Users_GetUsers%C0%AE", 400),
    ("/api/%25%36%41son/Users_GetUsers", 400),
    ("/api/json./Users_GetUsers", 400),
    ("/api/json/Feeds_GetFeeds/Users_GetUsers", 400),
    ("/api/soap", 403),
    ("/API/SOAP12/x", 403),
    ("/reference/api", 403),
    ("/Reference/API/native", 403),
    ("http://127.0.0.1/api/json/Feeds_GetFeeds", 400),
    ("*", 400),
]


@pytest.mark.parametrize(("target", "status"), BLOCKED)
def test_native_tricks_are_refused(gateway: Gateway, target: str, status: int) -> None:
    response = request(gateway.url, "GET", target, [("X-ApiKey", TOKEN_CI)])
    assert response.status == status, (response.status, response.body)
    assert response.header("x-gateway-error")
    assert gateway.standin.requests == []


@pytest.mark.parametrize(
    "target",
    [
        "/npm/internal/@scope%2Fname",
        "/npm/internal/@scope%2fname/-/name-1.0.0.tgz",
        "/nuget/internal/v3/index.json",
        "/v2/internal/app/manifests/latest",
    ],
)
def test_feed_paths_pass_intact(gateway: Gateway, target: str) -> None:
    response = request(gateway.url, "GET", target, [("X-ApiKey", TOKEN_CI)])
    assert response.status in (200, 401), response.body
    rec = only_request(gateway)
    assert rec.raw_path == target.replace("%2f", "%2F")
    assert rec.header("x-apikey") == [KEY_READ]
    assert rec.header("authorization") == [basic(KEY_READ, "api")]
    assert_no_client_secret(rec)


def test_nuget_push_gets_nuget_key_header(gateway: Gateway) -> None:
    response = request(
        gateway.url, "PUT", "/nuget/internal/package", [("X-NuGet-ApiKey", TOKEN_CI)], b"nupkg"
    )
    assert response.status == 200, response.body
    rec = only_request(gateway)
    assert rec.header("x-nuget-apikey") == [KEY_READ]
    assert rec.header("x-apikey") == [KEY_READ]
    assert_no_client_secret(rec)


def test_push_rule_picks_push_key(gateway: Gateway) -> None:
    response = request(gateway.url, "PUT", "/api/packages/internal/upload", [("X-ApiKey", TOKEN_CI)], b"pkg")
    assert response.status == 201, response.body
    assert_mapped(only_request(gateway), KEY_PUSH)
    audit = gateway.last_audit(response.header("x-request-id")[0])
    assert (audit["client"], audit["key"], audit["decision"], audit["reason"]) == (
        "ci",
        "push",
        "allow",
        "rule:0",
    )


# --- framing -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"POST /api/x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /api/x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"GET /api/x HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n folded\r\n\r\n",
        b"GET /api/x HTTP/1.1\nHost: h\nX-ApiKey: k\n\n",
        b"GET /api/x HTTP/1.1\r\nHost: h\r\nX-ApiKey : k\r\n\r\n",
    ],
)
def test_ambiguous_framing_is_refused(gateway: Gateway, raw: bytes) -> None:
    from tests.e2e.rawhttp import send_raw

    response = send_raw(gateway.url, raw)
    assert response.status == 400
    assert response.header("x-gateway-error") == ["framing_invalid"]
    assert gateway.standin.requests == []


def test_limits(gateway: Gateway) -> None:
    many = [(f"X-H{i}", "v") for i in range(120)]
    assert request(gateway.url, "GET", "/api/x", many).status == 431
    assert request(gateway.url, "GET", "/api/" + "a" * 9000).status == 414
    params = "&".join(f"p{i}=1" for i in range(300))
    assert request(gateway.url, "GET", f"/api/x?{params}", [("X-ApiKey", TOKEN_CI)]).status == 400
    assert request(gateway.url, "PROPFIND", "/api/x", [("X-ApiKey", TOKEN_CI)]).status == 405
    assert gateway.standin.requests == []


def test_hop_by_hop_overrides_and_forwarding_headers(gateway: Gateway) -> None:
    headers = [
        ("X-ApiKey", TOKEN_CI),
        ("Connection", "close, X-Secret-Hop"),
        ("X-Secret-Hop", "1"),
        ("Keep-Alive", "timeout=5"),
        ("X-HTTP-Method-Override", "DELETE"),
        ("X-Forwarded-For", "6.6.6.6"),
        ("X-Forwarded-Host", "evil.example"),
        ("Forwarded", "for=6.6.6.6"),
        ("Proxy-Authorization", "Basic abc"),
        ("X-Api-Key", "something"),
        ("X-ProGet-Deployment-Application", "app"),
    ]
    assert request(gateway.url, "GET", "/__standin/echo", headers).status == 200
    rec = only_request(gateway)
    names = {n for n, _ in rec.headers}
    for gone in (
        "x-secret-hop",
        "keep-alive",
        "x-http-method-override",
        "forwarded",
        "proxy-authorization",
        "x-api-key",
    ):
        assert gone not in names
    host = gateway.url.removeprefix("http://")
    assert rec.header("host") == [gateway.upstream_authority]  # never the client's Host
    assert rec.header("x-forwarded-host") == [host]
    assert rec.header("x-forwarded-for") == ["127.0.0.1"]
    assert rec.header("x-forwarded-proto") == ["http"]
    assert rec.header("x-proget-deployment-application") == ["app"]
    assert rec.method == "GET"


# --- responses -----------------------------------------------------------------------------------


def test_response_never_echoes_the_key(gateway: Gateway, client: httpx.Client) -> None:
    response = client.get("/__standin/echo-key", headers={"X-ApiKey": TOKEN_CI})
    assert response.status_code == 200
    assert not [name for name in response.headers if name.startswith("x-echo")]  # any spelling of it
    assert response.headers["x-other"] == "fine"


def test_upstream_challenge_cookie_and_location_are_rewritten(gateway: Gateway, client: httpx.Client) -> None:
    r401 = client.get("/__standin/status/401", headers={"X-ApiKey": TOKEN_CI})
    assert r401.status_code == 401
    assert r401.headers.get_list("www-authenticate") == ['Basic realm="proget-gateway"']
    assert "x-gateway-error" not in r401.headers
    r302 = client.get("/__standin/status/302", headers={"X-ApiKey": TOKEN_CI})
    assert r302.status_code == 302
    assert r302.headers["location"] == gateway.url + "/somewhere?x=1"
    assert "set-cookie" not in r302.headers


def test_range_etag_head_and_encoding_pass_through(gateway: Gateway, client: httpx.Client) -> None:
    auth = {"X-ApiKey": TOKEN_CI}
    url = "/api/packages/internal/download?name=p&version=1&size=100000"
    full = client.get(url, headers=auth)
    assert full.status_code == 200 and len(full.content) == 100000
    part = client.get(url, headers={**auth, "Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == full.content[10:20]
    assert part.headers["content-range"] == "bytes 10-19/100000"
    etag = full.headers["etag"]
    assert client.get(url, headers={**auth, "If-None-Match": etag}).status_code == 304
    head = client.head(url, headers=auth)
    assert head.status_code == 200 and head.headers["content-length"] == "100000" and head.content == b""
    chunked = client.get(url + "&chunked=1", headers=auth)
    assert chunked.content == full.content and "content-length" not in chunked.headers
    gz = client.get(url + "&gzip=1", headers={**auth, "Accept-Encoding": "gzip"})
    assert gz.headers["content-encoding"] == "gzip"
    assert only_gz(gateway).header("accept-encoding") == ["gzip"]


def only_gz(gateway: Gateway):  # type: ignore[no-untyped-def]
    return gateway.standin.requests[-1]


def test_chunked_upload_streams(gateway: Gateway, client: httpx.Client) -> None:
    def parts():  # type: ignore[no-untyped-def]
        for _ in range(50):
            yield b"x" * 100_000

    response = client.put("/api/packages/internal/upload", headers={"X-ApiKey": TOKEN_CI}, content=parts())
    assert response.status_code == 201, response.text
    assert response.json()["size"] == 5_000_000
    rec = only_request(gateway)
    assert rec.header("transfer-encoding") == ["chunked"]
    assert rec.body_size == 5_000_000


def test_upstream_abort_breaks_the_client_stream(gateway: Gateway, client: httpx.Client) -> None:
    lines = len(gateway.audit_lines())
    with pytest.raises(httpx.HTTPError):
        client.get("/__standin/abort?size=1000000&after=100000", headers={"X-ApiKey": TOKEN_CI})
    audit = gateway.last_audit(after=lines)
    assert (audit["decision"], audit["reason"], audit["status"]) == ("error", "upstream_aborted", 200)


def test_upstream_timeout_is_504(gateway: Gateway, client: httpx.Client) -> None:
    response = client.get("/__standin/slow?seconds=9", headers={"X-ApiKey": TOKEN_CI})
    assert response.status_code == 504
    assert response.headers["x-gateway-error"] == "upstream_timeout"


def test_admin_port(gateway: Gateway, client: httpx.Client) -> None:
    client.get("/__standin/echo", headers={"X-ApiKey": TOKEN_CI})
    assert httpx.get(gateway.admin_url + "/readyz").json()["ready"] is True
    metrics = httpx.get(gateway.admin_url + "/metrics").text
    assert (
        'proget_gateway_requests_total{client="ci",code="ok",decision="allow",status_class="2xx"}' in metrics
    )
    assert "proget_gateway_request_duration_seconds_bucket" in metrics
    assert client.get("/metrics").headers.get("x-gateway-error") == "credential_missing"


def test_no_secret_in_any_log_line(gateway: Gateway) -> None:
    """Runs after the others in this module: the whole log so far must hold no token and no key."""
    log = gateway.log_path.read_text()
    assert log.count("\n") > 50
    for secret in (*SECRETS, KEY_READ, KEY_PUSH, KEY_NATIVE):
        assert secret not in log
    for line in log.splitlines():
        if line.startswith("{"):
            assert set(json.loads(line)) >= {
                "request_id",
                "client",
                "key",
                "path",
                "decision",
                "reason",
                "status",
            }
