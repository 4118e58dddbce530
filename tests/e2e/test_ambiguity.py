"""Issue 8 §2 and §4 against the real gateway process: ambiguous credential spellings, positions and
media types are refused before anything reaches ProGet, and client identity headers never reach it.

Each "seen" case reached the recording stand-in on the code before this change."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.rewrite import CLIENT_IDENTITY_HEADERS
from gateway.standin import StandinServer
from tests.e2e.conftest import KEY_READ, TOKEN_CI, Gateway, running_gateway
from tests.e2e.rawhttp import request, send_raw

STOLEN = "STOLEN-proget-key-0000"
FORM = "application/x-www-form-urlencoded"


def refused_before_proget(gateway: Gateway, response: Any, code: str) -> None:
    assert response.header("x-gateway-error") == [code], response.body
    assert gateway.standin.requests == []
    assert STOLEN not in gateway.log_path.read_text()


@pytest.mark.parametrize(
    "target",
    [
        f"/api/management/feeds/list?+key={STOLEN}",  # seen: forwarded with its value
        f"/api/management/feeds/list?%20API_Key={STOLEN}",  # seen
        f"/api/json/Feeds_GetFeeds?a=1&API_Key%09={STOLEN}",
        f"/api/json/Feeds_GetFeeds?key%5B%5D={STOLEN}",
        f"/api/json/Feeds_GetFeeds?key[0]={STOLEN}",
        f"/__standin/echo?apikey={STOLEN}",
        f"/__standin/echo?api-key={STOLEN}",
        f"/__standin/echo?%EF%BC%A1%EF%BC%B0%EF%BC%A9_Key={STOLEN}",  # full-width API
        f"/__standin/echo?%E3%80%80key={STOLEN}",  # ideographic space
    ],
)
def test_query_names_in_another_spelling_are_refused(gateway: Gateway, target: str) -> None:
    response = request(gateway.url, "GET", target, [("X-ApiKey", TOKEN_CI)])
    refused_before_proget(gateway, response, "credential_ambiguous")


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", '{"\uff21\uff30\uff29_Key": "%s", "Feed_Id": 1}'),  # seen: full-width
        ("application/json", '{"\\uff21\\uff30\\uff29_Key": "%s"}'),  # the same, escaped
        ("application/json", '[{"API_Key": "%s"}]'),  # seen: inside a root array
        ("application/json", '{"Feed": {"API_Key": "%s"}}'),  # seen: in a nested object
        ("application/json", '{"a": [[{"b": {"api_key": "%s"}}]]}'),
        ("application/json", '{"key": "%s"}'),
        ("text/json", '{"API_Key ": "%s"}'),
        ("application/problem+json", '{"apiKey": "%s"}'),
        (FORM, "Feed_Id=1&+key=%s"),
        (FORM, "key%%5B%%5D=%s"),
    ],
)
def test_body_names_and_positions_in_another_spelling_are_refused(
    gateway: Gateway, content_type: str, body: str
) -> None:
    response = request(
        gateway.url,
        "POST",
        "/api/json/Feeds_GetFeeds",
        [("X-ApiKey", TOKEN_CI), ("Content-Type", content_type)],
        (body % STOLEN).encode(),
    )
    refused_before_proget(gateway, response, "credential_ambiguous")


def test_exact_spellings_are_still_cut_and_the_rest_kept(gateway: Gateway) -> None:
    body = json.dumps({"Feed_Id": 1, "API_Key": TOKEN_CI, "Tags": {"name": "key"}}).encode()
    response = request(
        gateway.url,
        "POST",
        f"/api/json/Feeds_GetFeeds?KEY={TOKEN_CI}&a=1",
        [("Content-Type", "application/json")],
        body,
    )
    assert response.status == 200, response.body
    (rec,) = gateway.standin.requests
    assert rec.query == "a=1"
    assert json.loads(rec.body_head) == {"Feed_Id": 1, "Tags": {"name": "key"}}
    assert rec.credentials == [("header:x-apikey", "proget-key-native-5555555555")]


@pytest.mark.parametrize(
    "connection",
    ["Content-Type", " content-length ", "keep-alive,\tHOST", "TRANSFER-ENCODING", "content-encoding"],
)
def test_connection_cannot_remove_a_header_the_decision_used(gateway: Gateway, connection: str) -> None:
    response = request(
        gateway.url,
        "PUT",
        "/api/packages/internal/upload",
        [("X-ApiKey", TOKEN_CI), ("Content-Type", "application/octet-stream"), ("Connection", connection)],
        b"package bytes",
    )
    assert response.status == 400
    refused_before_proget(gateway, response, "header_invalid")


def test_identity_and_routing_headers_never_reach_proget(gateway: Gateway) -> None:
    """Seen: X-Forwarded-Uri, X-Forwarded-User, X-Auth-Request-User and X-Gateway-Foo reached ProGet."""
    rows = [n.decode() for n in CLIENT_IDENTITY_HEADERS.exact]
    rows += [p.decode() + "x" for p in CLIENT_IDENTITY_HEADERS.prefixes]
    sent = [(name, "spoofed") for name in rows]
    sent += [
        ("X-Forwarded-Uri", "/admin"),
        ("X-Forwarded-User", "Admin"),
        ("X-Auth-Request-User", "Admin"),
        ("X-Gateway-Foo", "1"),
        ("X_Forwarded_User", "Admin"),
        ("X-MS-CLIENT-PRINCIPAL-NAME", "Admin"),
        ("X-ProGet-Deployment-Application", "app"),  # ProGet reads these from clients: kept
    ]
    response = request(gateway.url, "GET", "/__standin/echo", [("X-ApiKey", TOKEN_CI), *sent])
    assert response.status == 200
    (rec,) = gateway.standin.requests
    assert [(n, v) for n, v in rec.headers if v in ("spoofed", "Admin", "/admin", "1")] == []
    assert rec.header("x-forwarded-for") == ["127.0.0.1"]
    assert rec.header("x-forwarded-proto") == ["http"]
    assert rec.header("x-proget-deployment-application") == ["app"]


# --- an anonymous sidecar client, and site-specific header names ------------------------------------


@pytest.fixture(scope="module")
def sidecar_session(
    tmp_path_factory: pytest.TempPathFactory, standin_server: StandinServer
) -> Iterator[Gateway]:
    def mutate(config: dict[str, Any]) -> None:
        config["clients"].append(
            {
                "name": "sidecar",
                "anonymous": True,
                "rules": [{"paths": ["/api/**", "/__standin/**"], "key": "read"}],
            }
        )
        config["strip_request_headers"] = ["X-Corp-User", "x_site_*"]

    with running_gateway(tmp_path_factory.mktemp("sidecar"), standin_server, mutate) as gw:
        yield gw


@pytest.fixture
def sidecar(sidecar_session: Gateway) -> Gateway:
    sidecar_session.standin.clear()
    return sidecar_session


@pytest.mark.parametrize(
    "content_type",
    [
        "application/x-www-form-urlencoded+json",  # seen: scanned as a form, read by ASP.NET Core as JSON
        "Application/X-WWW-Form-Urlencoded+JSON; charset=utf-8",
        "application/x-www-form-urlencoded-json",
        "application/x-www-form-urlencoded; x=json",
    ],
)
def test_an_anonymous_client_cannot_smuggle_its_key_in_a_form_json_type(
    sidecar: Gateway, content_type: str
) -> None:
    # compact, so that it is also a valid (printable, space-free) form: what the old scanner accepted
    body = json.dumps({"API_Key": STOLEN, "Feed_Name": "x"}, separators=(",", ":")).encode()
    response = request(
        sidecar.url, "POST", "/api/management/feeds/list", [("Content-Type", content_type)], body
    )
    assert response.status == 415
    refused_before_proget(sidecar, response, "content_type_not_allowed")


def test_the_anonymous_sidecar_is_served(sidecar: Gateway) -> None:
    """The control for the test above: the same client with a plain JSON body reaches ProGet."""
    body = b'{"Feed_Name": "x"}'
    response = request(
        sidecar.url, "POST", "/api/management/feeds/list", [("Content-Type", "application/json")], body
    )
    assert response.status == 200, response.body
    (rec,) = sidecar.standin.requests
    assert rec.credentials == [("header:x-apikey", KEY_READ)]
    assert rec.body_head == body


def test_site_specific_headers_are_stripped(sidecar: Gateway) -> None:
    raw = (
        "GET /__standin/echo HTTP/1.1\r\nHost: h\r\nConnection: close\r\n"
        "X-Corp-User: admin\r\nx_corp_user: admin\r\nX-Site-Role: admin\r\nX-Corp-Users: kept\r\n\r\n"
    )
    assert send_raw(sidecar.url, raw.encode()).status == 200
    (rec,) = sidecar.standin.requests
    assert [(n, v) for n, v in rec.headers if n.startswith(("x-corp", "x-site", "x_corp"))] == [
        ("x-corp-users", "kept")
    ]
