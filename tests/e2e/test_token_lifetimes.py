"""Token lifetimes against the real gateway: an expired token is refused as expired, audited with its
label; the valid one next to it works; the expiry gauges are exported; `token new --expires` prints an
entry the gateway accepts."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gateway.settings import token_hash
from gateway.standin import StandinServer
from tests.e2e.conftest import Gateway, running_gateway

OLD, NEW = "pgw_old_" + "o" * 40, "pgw_new_" + "n" * 40
NOW = datetime.now(UTC)


@pytest.fixture
def rotating(tmp_path: Path, standin_server: StandinServer) -> Iterator[Gateway]:
    def tokens(config: dict[str, Any]) -> None:
        config["clients"].append(
            {
                "name": "rotating",
                "tokens": [
                    {
                        "hash": f"sha256:{token_hash(OLD)}",
                        "label": "q3",
                        "not_after": (NOW - timedelta(hours=1)).isoformat(),
                    },
                    {
                        "hash": f"sha256:{token_hash(NEW)}",
                        "label": "q4",
                        "not_after": (NOW + timedelta(days=90)).isoformat(),
                    },
                ],
                "rules": [{"paths": ["/__standin/**"], "key": "read"}],
            }
        )

    with running_gateway(tmp_path, standin_server, mutate=tokens) as gw:
        yield gw


def test_an_expired_token_is_refused_as_expired_and_audited_with_its_label(rotating: Gateway) -> None:
    with httpx.Client(base_url=rotating.url, timeout=10, trust_env=False) as c:
        old = c.get("/__standin/echo", headers={"X-ApiKey": OLD})
        new = c.get("/__standin/echo", headers={"X-ApiKey": NEW})
    assert old.status_code == 401 and old.headers["x-gateway-error"] == "token_expired"
    assert new.status_code == 200
    refused = rotating.last_audit(old.headers["x-request-id"])
    assert (refused["reason"], refused["token_label"], refused["client"]) == ("token_expired", "q3", None)
    allowed = rotating.last_audit(new.headers["x-request-id"])
    assert (allowed["token_label"], allowed["client"]) == ("q4", "rotating")
    scraped = httpx.get(rotating.admin_url + "/metrics", timeout=10).text
    left = re.search(r'^proget_gateway_token_expiry_seconds\{client="rotating"\} (\S+)$', scraped, re.M)
    assert left is not None and float(left[1]) < 0  # the earliest not_after has passed: rotate


def test_token_new_prints_an_entry_with_a_lifetime(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "token", "new", "--client", "ci", "--expires", "90d"],
        capture_output=True,
        text=True,
        check=True,
    )
    token = re.search(r"^token:  (\S+)$", done.stdout, re.M)
    line = re.search(r"^  tokens: (\[.*\])$", done.stdout, re.M)
    assert token is not None and line is not None
    (entry,) = yaml.safe_load(line[1])
    assert entry["hash"] == f"sha256:{token_hash(token[1])}"
    assert entry["label"].startswith("ci-")
    days = (entry["not_after"] - datetime.now(UTC)).total_seconds() / 86400
    assert 89.9 < days <= 90
