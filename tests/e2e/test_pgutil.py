"""pgutil, Inedo's own CLI, through the real gateway: it sends its credential only in ``X-ApiKey`` — the
key as is, or ``--username/--password`` as ProGet's pseudo-key ``user:password`` (proget-facts.md §1.1).
These replay its request shapes with a gateway token in both forms."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.standin import StandinServer
from tests.e2e.conftest import KEY_PUSH, KEY_READ, TOKEN_CI, Gateway, start_gateway
from tests.processes import stop

TOKEN_PGUTIL = "pgw_pgutil_" + "p" * 40
UA = {"User-Agent": "pgutil/2.1.0"}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, standin_server: StandinServer) -> Iterator[Gateway]:
    from gateway.settings import token_hash

    def pgutil_client(config: dict[str, Any]) -> None:
        config["clients"].append(
            {
                "name": "pgutil",
                "tokens": [f"sha256:{token_hash(TOKEN_PGUTIL)}"],
                "rules": [
                    {"methods": ["PUT", "POST"], "paths": ["/api/packages/internal/**"], "key": "push"},
                    {"methods": ["GET", "HEAD"], "paths": ["/health", "/api/**", "/upack/**"], "key": "read"},
                ],
            }
        )

    tmp: Path = tmp_path_factory.mktemp("pgutil")
    gateway = start_gateway(tmp, standin_server.standin, standin_server.url, pgutil_client)
    yield gateway
    stop(gateway.process)


FORMS = {"api-key": TOKEN_PGUTIL, "username-password": f"devbuilds:{TOKEN_PGUTIL}"}
SHAPES: list[tuple[str, str, dict[str, str], bytes, int, str]] = [
    (
        "GET",
        "/upack/internal/versions?group=tools&name=cli",
        {"Accept": "application/json"},
        b"",
        200,
        KEY_READ,
    ),
    ("GET", "/api/management/feeds/list", {}, b"", 200, KEY_READ),
    (
        "GET",
        "/api/packages/internal/download?name=tools&version=1.2.0",
        {"Range": "bytes=0-99"},
        b"",
        206,
        KEY_READ,
    ),
    (
        "PUT",
        "/api/packages/internal/upload",
        {"Content-Type": "application/octet-stream"},
        b"PK\x03\x04" + b"u" * 5000,
        201,
        KEY_PUSH,
    ),
]


@pytest.mark.parametrize("form", FORMS, ids=list(FORMS))
@pytest.mark.parametrize("shape", SHAPES, ids=[s[1].split("?")[0] for s in SHAPES])
def test_pgutil_request_shapes(
    gw: Gateway, form: str, shape: tuple[str, str, dict[str, str], bytes, int, str]
) -> None:
    method, path, headers, body, status, key = shape
    gw.standin.clear()
    response = httpx.request(
        method, gw.url + path, headers={**UA, **headers, "X-ApiKey": FORMS[form]}, content=body, timeout=10
    )
    assert response.status_code == status, response.text
    (rec,) = gw.standin.requests
    assert rec.header("x-apikey") == [key]  # only the policy's key; never the token, never "user:"
    blob = rec.raw_path + rec.query + repr(rec.headers)
    assert TOKEN_PGUTIL not in blob and "devbuilds" not in blob
    audit = gw.last_audit(response.headers["x-request-id"])
    expected_source = "header:x-apikey-userpass" if form == "username-password" else "header:x-apikey"
    assert (audit["client"], audit["credential_source"]) == ("pgutil", expected_source)


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({"X-ApiKey": "devbuilds:pgw_not_a_known_token"}, 401, "token_unknown"),
        (
            {"X-ApiKey": f"devbuilds:{TOKEN_PGUTIL}", "Authorization": f"Bearer {TOKEN_CI}"},
            400,
            "credential_ambiguous",
        ),
        ({"X-ApiKey": ":"}, 400, "credential_malformed"),
    ],
    ids=["unknown", "ambiguous", "empty"],
)
def test_pseudo_key_refusals(gw: Gateway, headers: dict[str, str], status: int, code: str) -> None:
    gw.standin.clear()
    response = httpx.get(gw.url + "/api/management/feeds/list", headers=headers, timeout=10)
    assert (response.status_code, response.headers["x-gateway-error"]) == (status, code)
    assert gw.standin.requests == []


def test_same_token_as_pseudo_key_and_basic_is_one_credential(gw: Gateway) -> None:
    gw.standin.clear()
    response = httpx.get(
        gw.url + "/api/management/feeds/list",
        headers={"X-ApiKey": f"devbuilds:{TOKEN_PGUTIL}"},
        auth=("devbuilds", TOKEN_PGUTIL),
        timeout=10,
    )
    assert response.status_code == 200
