"""The chart's Grafana dashboard against a real Prometheus: it scrapes a real gateway's admin port under a short
load, then every panel's query must return data (so a renamed metric breaks CI, not a dashboard)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gateway.settings import token_hash
from gateway.standin import StandinServer
from tests.e2e.conftest import TOKEN_CI, TOKEN_READER, Gateway, running_gateway
from tests.processes import free_port, stop

DASHBOARD = (
    Path(__file__).resolve().parents[2] / "helm" / "proget-gateway" / "dashboards" / "proget-gateway.json"
)


def with_lifetimes(config: dict[str, Any]) -> None:
    """A token and a key with an end date, so the expiry panel has series to show."""
    ci = config["clients"][0]
    ci["tokens"] = [
        {"hash": f"sha256:{token_hash(TOKEN_CI)}", "label": "q4", "not_after": "2099-01-01T00:00:00Z"}
    ]
    config["keys"]["read"]["expires"] = "2099-01-01T00:00:00Z"


@pytest.fixture
def gateway(tmp_path: Path, standin_server: StandinServer) -> Iterator[Gateway]:
    with running_gateway(tmp_path / "gw", standin_server, with_lifetimes) as gw:
        yield gw


@pytest.fixture
def prometheus(gateway: Gateway, tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("prometheus")
    assert binary, "prometheus missing: .ci/system-deps.sh installs it"
    port = free_port()
    target = gateway.admin_url.removeprefix("http://")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "gw", "static_configs": [{"targets": [target]}]}],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = (tmp_path / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise AssertionError((tmp_path / "prometheus.log").read_text())
        yield url
    finally:
        stop(process)
        log.close()


def load(gateway: Gateway) -> None:
    with httpx.Client(base_url=gateway.url, timeout=10, trust_env=False) as c:
        for _ in range(5):
            c.get("/__standin/echo", headers={"X-ApiKey": TOKEN_CI})  # allowed
            c.delete("/api/packages/x", headers={"X-ApiKey": TOKEN_READER})  # refused by policy
            c.get("/api/x", headers={"X-ApiKey": "pgw_unknown"})  # unknown token
        with pytest.raises(httpx.RemoteProtocolError):  # upstream error: ProGet aborts mid-body
            c.get("/__standin/abort", headers={"X-ApiKey": TOKEN_CI})


def test_every_dashboard_panel_query_returns_data(gateway: Gateway, prometheus: str) -> None:
    load(gateway)
    time.sleep(3)
    load(gateway)
    time.sleep(3)
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert len(panels) >= 9
    for panel in panels:
        for target in panel["targets"]:
            assert query(prometheus, target["expr"]), (
                f"panel {panel['title']!r}: no data for {target['expr']}"
            )


def query(prometheus: str, expr: str, timeout: float = 20) -> list[object]:
    """The instant query's result, waiting for Prometheus to have scraped enough samples for a rate()."""
    deadline = time.monotonic() + timeout
    while True:
        answer = httpx.get(prometheus + "/api/v1/query", params={"query": expr}).json()
        assert answer["status"] == "success", answer
        if answer["data"]["result"] or time.monotonic() > deadline:
            return list(answer["data"]["result"])
        time.sleep(0.5)
