"""The status page's memory is bounded and what it renders is escaped and free of credentials."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.audit import Flow
from gateway.errors import NativeMethodNotAllowed, TokenUnknown, UpstreamTimeout
from gateway.needles import Needles
from gateway.settings import Tracing, build_config, token_hash
from gateway.status import WINDOW_MINUTES, ExplainForm, Recent, Upstream, parse_form, render

TOKEN = "pgw_" + "t" * 40
CONFIG = build_config(
    {
        "upstream": {"url": "http://proget.internal:8624/"},
        "keys": {"read": {"value": "proget-read-key-123456"}},
        "native_api": {"allow": ["Feeds_GetFeeds"]},
        "clients": [
            {
                "name": "ci",
                "tokens": [f"sha256:{token_hash(TOKEN)}"],
                "rules": [{"paths": ["/api/**"], "key": "read"}],
            }
        ],
    }
)


def _flow(client: str | None, path: str, error: object = None, decision: str = "deny") -> Flow:
    flow = Flow(request_id="r", method="GET", peer="p", path=path, client=client, decision=decision)
    if error is not None:
        flow.error = error  # type: ignore[assignment]
    flow.secrets = Needles.of([TOKEN.encode()])
    return flow


outcome = st.sampled_from(["allow", "deny", "error"])


@given(st.integers(1, 50), st.lists(st.tuples(st.sampled_from(["ci", None]), outcome), max_size=300))
def test_memory_is_bounded_and_counts_add_up(size: int, requests: list[tuple[str | None, str]]) -> None:
    recent = Recent(size)
    for client, decision in requests:
        error = {"allow": None, "deny": TokenUnknown(), "error": UpstreamTimeout()}[decision]
        recent.record(_flow(client, "/api/x", error, decision))
    assert len(recent.refusals) <= size
    assert len(recent._minutes) <= WINDOW_MINUTES
    counts = recent.per_client()
    assert sum(c.allowed for c in counts.values()) == sum(d == "allow" for _, d in requests)
    assert sum(c.refused for c in counts.values()) == sum(d == "deny" for _, d in requests)
    assert sum(c.errors for c in counts.values()) == sum(d == "error" for _, d in requests)


@given(st.text(max_size=80))
def test_what_is_rendered_is_escaped_and_never_a_token(noise: str) -> None:
    recent = Recent(10)
    recent.record(_flow("ci", f"/api/<script>{noise}/{TOKEN}", NativeMethodNotAllowed()))
    form = parse_form({"client": "ci", "method": "get", "url": f"/api/<b>{noise}"}, CONFIG)
    page = render(CONFIG, recent, Upstream(True, {"database": 1.0}), form)
    assert "<script>" not in page and "<b>" not in page
    assert TOKEN not in page and "proget-read-key-123456" not in page
    assert "native_method_not_allowed" in page


def test_the_form_only_takes_known_clients_and_methods() -> None:
    assert parse_form({}, CONFIG) is None
    form = parse_form({"client": "nobody", "method": "BREW", "url": "/api/x"}, CONFIG)
    assert form == ExplainForm("", "GET", "/api/x")


def test_a_reloaded_size_keeps_the_latest_refusals() -> None:
    recent = Recent(5)
    for i in range(5):
        recent.record(_flow("ci", f"/api/{i}", TokenUnknown()))
    recent.resize(2)
    assert [r.path for r in recent.refusals] == ["/api/3", "/api/4"]
    recent.resize(10)
    recent.record(_flow("ci", "/api/5", TokenUnknown()))
    assert len(recent.refusals) == 3


def test_the_page_says_whether_traces_are_exported(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_SAMPLER"):
        monkeypatch.delenv(name, raising=False)
    up = Upstream(True, {})
    assert "<th>traces</th><td>off</td>" in render(CONFIG, Recent(10), up, None)
    traced = replace(
        CONFIG,
        settings=CONFIG.settings.model_copy(
            update={"tracing": Tracing(otlp_endpoint="http://collector:4318", sample_ratio=0.05)}
        ),
    )
    page = render(traced, Recent(10), up, None)
    assert "on: OTLP/HTTP to http://collector:4318, sample ratio 0.05" in page
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://user:secret@elsewhere:4318")
    page = render(CONFIG, Recent(10), up, None)
    assert "on: OTLP/HTTP to OTEL_* variables, sample ratio 1.0" in page and "secret" not in page
