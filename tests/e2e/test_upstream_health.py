"""Readiness is "ProGet answers HTTP at all": a failing ProGet component (its /health → 500) keeps /readyz 200
and shows in proget_upstream_health{component}; both ProGet health formats (2025 JSON, 2026 plain text)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from gateway.standin import Standin
from tests.e2e.conftest import Gateway


@pytest.fixture
def standin(gateway: Gateway) -> Iterator[Standin]:
    yield gateway.standin
    gateway.standin.health_failing = set()
    gateway.standin.health_format = "2026"
    gateway.standin.version = "2026.1.0"


def gauges(gateway: Gateway) -> str:
    time.sleep(1.1)  # readiness caches ProGet's answer for a second
    return httpx.get(gateway.admin_url + "/metrics").text


@pytest.mark.parametrize("fmt", ["2025", "2026"])
def test_failing_component_keeps_ready_and_shows_in_gauge(
    gateway: Gateway, standin: Standin, fmt: str
) -> None:
    standin.health_format = fmt  # type: ignore[assignment]
    standin.version = f"{fmt}.3.7"
    standin.health_failing = {"service"}
    text = gauges(gateway)
    ready = httpx.get(gateway.admin_url + "/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert 'proget_upstream_health{component="service"} 0.0' in text
    assert 'proget_upstream_health{component="database"} 1.0' in text
    assert f'proget_upstream_info{{version="{fmt}.3.7"}} 1.0' in text
    standin.health_failing = set()
    assert 'proget_upstream_health{component="service"} 1.0' in gauges(gateway)


def test_standin_health_formats(gateway: Gateway, standin: Standin) -> None:
    """The stand-in answers like each ProGet generation, so the test above proves both."""
    base = "http://" + gateway.upstream_authority
    standin.health_failing = {"license"}
    standin.health_format = "2026"
    plain = httpx.get(base + "/health")
    assert plain.status_code == 500 and not plain.text.startswith("{")
    standin.health_format = "2025"
    legacy = httpx.get(base + "/health")
    assert legacy.status_code == 500 and legacy.json()["licenseStatus"] == "Error"
    assert httpx.get(base + "/health/json").json()["serviceStatus"] == "OK"
