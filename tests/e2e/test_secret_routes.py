"""Against the real gateway: a Native API call in any format segment is not forwarded under `/api/**`,
ProGet's secret-bearing routes are refused unless a rule names them, `/v2/_auth` never reaches ProGet,
and `check` warns about every rule that names a secret route."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gateway.standin import StandinServer
from tests.e2e.conftest import TOKEN_CI, Gateway, base_config, running_gateway

CI = {"X-ApiKey": TOKEN_CI}


@pytest.mark.parametrize(
    "target",
    [
        "/api/xml/Feeds_DeleteFeed",
        "/api/XML/Users_CreateOrUpdateUser/",
        "/api/json.xml/Feeds_DeleteFeed",
        "/api/csv/Feeds_DeleteFeed",
        "/api/json/Feeds_DeleteFeed.json",
    ],
)
def test_a_native_call_in_any_format_is_not_forwarded_under_a_wildcard(
    gateway: Gateway, client: httpx.Client, target: str
) -> None:
    response = client.post(target, headers=CI)
    assert response.status_code in (400, 403), response.text
    assert gateway.standin.requests == []


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("GET", "/api/api-keys/list"),
        ("POST", "/api/api-keys/create"),
        ("GET", "/api/settings/list?showAll=true"),
        ("GET", "/API/Security/users/list"),
        ("GET", "/api/management/connectors/list"),
    ],
)
def test_secret_routes_are_refused_under_a_wildcard(
    gateway: Gateway, client: httpx.Client, method: str, target: str
) -> None:
    response = client.request(method, target, headers=CI)
    assert response.status_code in (400, 403), response.text
    assert response.headers["x-gateway-error"] in ("secret_route_not_named", "path_not_canonical")
    assert gateway.standin.requests == []


def test_v2_auth_never_reaches_proget(gateway: Gateway, client: httpx.Client) -> None:
    response = client.get("/v2/_auth?service=x&scope=repository:internal/app:pull", headers=CI)
    assert response.status_code == 403
    assert response.headers["x-gateway-error"] == "secret_route_blocked"
    assert gateway.standin.requests == []


@pytest.fixture
def key_admin(tmp_path: Path, standin_server: StandinServer) -> Iterator[Gateway]:
    def named(config: dict[str, Any]) -> None:
        rules = config["clients"][0]["rules"]
        rules.insert(0, {"methods": ["GET"], "paths": ["/api/api-keys/list"], "key": "native"})

    with running_gateway(tmp_path, standin_server, mutate=named) as gw:
        yield gw


def test_a_rule_that_names_a_secret_route_allows_it(key_admin: Gateway) -> None:
    response = httpx.get(key_admin.url + "/api/api-keys/list", headers=CI, timeout=10)
    assert "x-gateway-error" not in response.headers, response.text  # forwarded: ProGet answered
    assert [r.raw_path for r in key_admin.standin.requests] == ["/api/api-keys/list"]


def test_check_warns_about_rules_that_name_secret_routes(tmp_path: Path) -> None:
    config = base_config("http://127.0.0.1:1", 1, 2)
    config["clients"][0]["rules"].insert(0, {"paths": ["/api/settings/**"], "key": "native"})
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "check", "--config", str(path), "--offline"],
        capture_output=True,
        text=True,
        env={"E2E_KEY_PUSH": "k" * 20, "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert "warning: client 'ci' rule #0 path '/api/settings/**' allows /api/settings/**" in done.stderr
