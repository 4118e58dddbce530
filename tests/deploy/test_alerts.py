"""The chart's PrometheusRule, checked by Prometheus's own tool: `promtool check rules` on what `helm template`
renders, and `promtool test rules` on synthetic series that make each alert fire, and not fire."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import CHART
from tests.deploy.helpers import Helm, one, run

pytestmark = pytest.mark.deploy

JOB = "rel-proget-gateway"
SEL = f'job="{JOB}"'
WARN = {"severity": "warning"}

# alert → (firing series, quiet series, eval time, labels of the firing alert)
CASES: dict[str, tuple[dict[str, str], dict[str, str], str, dict[str, str]]] = {
    "ProgetGatewayDown": (
        {f'up{{{SEL},instance="a"}}': "0x20"},
        {f'up{{{SEL},instance="a"}}': "1x20"},
        "10m",
        {"severity": "critical", "job": JOB, "instance": "a"},
    ),
    "ProgetGatewayUpstreamErrors": (
        {
            f'proget_gateway_requests_total{{{SEL},client="ci"}}': "0+60x30",
            f'proget_gateway_upstream_errors_total{{{SEL},code="upstream_timeout"}}': "0+10x30",
        },
        {
            f'proget_gateway_requests_total{{{SEL},client="ci"}}': "0+60x30",
            f'proget_gateway_upstream_errors_total{{{SEL},code="upstream_timeout"}}': "0+0x30",
        },
        "25m",
        WARN,
    ),
    "ProgetGatewayRefusalSpike": (
        {
            f'proget_gateway_requests_total{{{SEL},client="ci",decision="deny"}}': "0+60x30",
            f'proget_gateway_requests_total{{{SEL},client="ci",decision="allow"}}': "0+10x30",
        },
        {
            f'proget_gateway_requests_total{{{SEL},client="ci",decision="deny"}}': "0+1x30",
            f'proget_gateway_requests_total{{{SEL},client="ci",decision="allow"}}': "0+60x30",
        },
        "25m",
        {**WARN, "client": "ci"},
    ),
    "ProgetGatewayLatencyP99": (
        {
            f'proget_gateway_request_duration_seconds_bucket{{{SEL},le="1"}}': "0+10x30",
            f'proget_gateway_request_duration_seconds_bucket{{{SEL},le="10"}}': "0+100x30",
            f'proget_gateway_request_duration_seconds_bucket{{{SEL},le="+Inf"}}': "0+100x30",
        },
        {
            f'proget_gateway_request_duration_seconds_bucket{{{SEL},le="1"}}': "0+100x30",
            f'proget_gateway_request_duration_seconds_bucket{{{SEL},le="10"}}': "0+100x30",
            f'proget_gateway_request_duration_seconds_bucket{{{SEL},le="+Inf"}}': "0+100x30",
        },
        "25m",
        WARN,
    ),
    "ProgetGatewayRateLimited": (
        {
            f'proget_gateway_limit_refusals_total{{{SEL},client="ci",reason="rate_limited",mode="enforce"}}': "0+60x30"
        },
        {
            f'proget_gateway_limit_refusals_total{{{SEL},client="ci",reason="rate_limited",mode="shadow"}}': "0+60x30"
        },
        "25m",
        {**WARN, "client": "ci"},
    ),
    "ProgetGatewayConfigReloadFailing": (
        {
            f'proget_gateway_config_reloads_total{{{SEL},result="failure"}}': "0 0 0 1 1 1 1 1 1 1 1 1 1 1 1 1 1",
            f"proget_gateway_config_last_reload_success_timestamp_seconds{{{SEL}}}": "0x16",
        },
        {
            f'proget_gateway_config_reloads_total{{{SEL},result="failure"}}': "0 0 0 1 1 1 1 1 1 1 1 1 1 1 1 1 1",
            f"proget_gateway_config_last_reload_success_timestamp_seconds{{{SEL}}}": "0+60x16",
        },
        "15m",
        {**WARN, "job": JOB, "result": "failure"},
    ),
    "ProgetGatewayTokenExpiring": (
        {f'proget_gateway_token_expiry_seconds{{{SEL},instance="a",client="ci"}}': "1000000-600x120"},
        {f'proget_gateway_token_expiry_seconds{{{SEL},instance="a",client="ci"}}': "5000000-60x120"},
        "100m",
        {**WARN, "job": JOB, "client": "ci"},
    ),
    "ProgetGatewayKeyExpiring": (
        {f'proget_gateway_key_expiry_seconds{{{SEL},instance="a",key="read"}}': "-5x120"},
        {f'proget_gateway_key_expiry_seconds{{{SEL},instance="a",key="read"}}': "2000000x120"},
        "100m",
        {**WARN, "job": JOB, "key": "read"},
    ),
    "ProgetUpstreamComponentUnhealthy": (
        {f'proget_upstream_health{{{SEL},component="service"}}': "0x20"},
        {f'proget_upstream_health{{{SEL},component="service"}}': "1x20"},
        "15m",
        {**WARN, "job": JOB, "component": "service"},
    ),
}


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool missing: .ci/system-deps.sh installs Debian's prometheus"
    return path


def rendered_rules(helm: Helm, tmp_path: Path) -> Path:
    docs = helm.render(CHART, [CHART / "ci" / "central-values.yaml"], {"prometheusRule": {"enabled": True}})
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(one(docs, "PrometheusRule")["spec"]))
    return rules


def test_rendered_rules_pass_promtool_check(helm: Helm, tmp_path: Path) -> None:
    done = run([promtool(), "check", "rules", rendered_rules(helm, tmp_path)])
    assert done.returncode == 0, done.stdout + done.stderr
    names = {
        r["alert"]
        for g in yaml.safe_load((tmp_path / "rules.yaml").read_text())["groups"]
        for r in g["rules"]
    }
    assert names == set(CASES), "every alert has a firing/quiet unit test"


def annotations(rules: Path, alert: str) -> dict[str, str]:
    found = [
        r for g in yaml.safe_load(rules.read_text())["groups"] for r in g["rules"] if r["alert"] == alert
    ]
    return dict(found[0]["annotations"])


def unit_test(
    series: dict[str, str], at: str, alert: str, labels: dict[str, str] | None, notes: dict[str, str]
) -> dict[str, Any]:
    expected = [] if labels is None else [{"exp_labels": labels, "exp_annotations": notes}]
    return {
        "interval": "1m",
        "input_series": [{"series": s, "values": v} for s, v in series.items()],
        "alert_rule_test": [{"eval_time": at, "alertname": alert, "exp_alerts": expected}],
    }


@pytest.mark.parametrize("alert", sorted(CASES))
def test_alert_fires_and_stays_quiet(helm: Helm, tmp_path: Path, alert: str) -> None:
    firing, quiet, at, labels = CASES[alert]
    rules = rendered_rules(helm, tmp_path)
    tests = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [
            unit_test(firing, at, alert, labels, annotations(rules, alert)),
            unit_test(quiet, at, alert, None, {}),
        ],
    }
    spec = tmp_path / "tests.yaml"
    spec.write_text(yaml.safe_dump(tests))
    done = run([promtool(), "test", "rules", spec])
    assert done.returncode == 0, done.stdout + done.stderr


def test_dashboard_configmap_is_picked_up_by_the_grafana_sidecar(helm: Helm) -> None:
    docs = helm.render(CHART, [CHART / "ci" / "central-values.yaml"], {"dashboards": {"enabled": True}})
    cm = one(docs, "ConfigMap", "rel-proget-gateway-dashboards")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(cm["data"]["proget-gateway.json"])
    assert dashboard == json.loads((CHART / "dashboards" / "proget-gateway.json").read_text())
    off = helm.render(CHART, [CHART / "ci" / "central-values.yaml"])
    assert not [
        d for d in off if d["kind"] in ("PrometheusRule",) or d["metadata"]["name"].endswith("-dashboards")
    ]
