"""proget_gateway_upstream_response_seconds tells ProGet's time apart from the whole request's: a ProGet
that takes 0.3 s to answer shows there, a request the gateway refuses does not."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from gateway.standin import StandinServer
from tests.e2e.conftest import TOKEN_CI, running_gateway


def _sample(text: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    assert found, name
    return float(found[1])


def test_upstream_response_time_is_progets_time(tmp_path: Path, standin_server: StandinServer) -> None:
    with running_gateway(tmp_path, standin_server) as gw:
        ok = httpx.get(gw.url + "/__standin/slow?seconds=0.3", headers={"X-ApiKey": TOKEN_CI}, timeout=10)
        refused = httpx.get(gw.url + "/__standin/slow?seconds=0.3", headers={"X-ApiKey": "pgw_x"}, timeout=10)
        assert (ok.status_code, refused.status_code) == (200, 401)
        gw.last_audit(refused.headers["x-request-id"])  # both requests are finished and counted
        text = httpx.get(gw.admin_url + "/metrics", timeout=10).text
    assert _sample(text, "proget_gateway_upstream_response_seconds_count") == 1  # the refusal never went
    upstream = _sample(text, "proget_gateway_upstream_response_seconds_sum")
    whole = _sample(text, 'proget_gateway_request_duration_seconds_sum{decision="allow"}')
    assert 0.3 <= upstream <= whole < 0.3 + 0.5
