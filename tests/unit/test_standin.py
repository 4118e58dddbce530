"""The ProGet stand-in the e2e tests trust: it must see keys where ProGet would, and serve bytes right."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import pytest

from gateway.standin import _BLOCK, Standin, StandinServer

KEY = "standin-key-1"


@pytest.fixture(scope="module")
def server() -> Iterator[StandinServer]:
    with StandinServer(Standin(keys={KEY: "read"}, anonymous="none")) as s:
        yield s


@pytest.fixture
def http(server: StandinServer) -> Iterator[httpx.Client]:
    server.standin.clear()
    with httpx.Client(base_url=server.url, trust_env=False) as c:
        yield c


@pytest.mark.parametrize(
    ("kwargs", "source"),
    [
        ({"headers": {"X-ApiKey": KEY}}, "header:x-apikey"),
        ({"headers": {"Authorization": "Basic " + base64.b64encode(f"api:{KEY}".encode()).decode()}}, None),
        ({"params": {"key": KEY}}, "query:key"),
        ({"params": {"API_KEY": KEY}}, "query:api_key"),
        ({"data": {"key": KEY}}, "form:key"),
        ({"json": {"api_key": KEY}}, "json:API_Key"),
    ],
)
def test_sees_keys_where_proget_reads_them(
    http: httpx.Client, server: StandinServer, kwargs: dict[str, object], source: str | None
) -> None:
    response = http.post("/__standin/echo", **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 200
    assert response.json()["api_key_role"] == ["read"]
    (rec,) = server.standin.requests
    assert [v for _, v in rec.credentials] == [KEY]
    if source:
        assert rec.credentials[0][0] == source


def test_refuses_like_a_locked_down_proget(http: httpx.Client) -> None:
    anonymous = http.get("/__standin/echo")
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == 'Basic realm="ProGet"'
    assert http.get("/__standin/echo", headers={"X-ApiKey": "wrong"}).status_code == 403


def test_download_range_etag_and_upload(http: httpx.Client) -> None:
    auth = {"X-ApiKey": KEY}
    url = "/api/packages/f/download?size=3000000"
    full = http.get(url, headers=auth).content
    assert len(full) == 3_000_000
    assert full == (_BLOCK * 3)[:3_000_000]  # the stand-in's 1 MiB block, repeated
    part = http.get(url, headers={**auth, "Range": "bytes=1048575-1048577"})
    assert part.status_code == 206 and part.content == full[1048575:1048578]
    etag = http.get(url, headers=auth).headers["etag"]
    assert http.get(url, headers={**auth, "If-None-Match": etag}).status_code == 304
    up = http.put("/api/packages/f/upload", headers=auth, content=b"abc")
    assert up.status_code == 201
    assert up.json() == {
        "size": 3,
        "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    }
