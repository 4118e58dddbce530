"""OpenTelemetry traces from the real gateway to a real OTLP/HTTP receiver (tests/otlp_receiver.py):
the span tree, the trace context sent to ProGet, who may continue a trace, and that no token or key
is in any exported byte."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.standin import StandinServer
from gateway.tracing import FLUSH_AT_EXIT_S
from tests.e2e.conftest import KEY_NATIVE, KEY_PUSH, KEY_READ, TOKEN_CI, Gateway, running_gateway
from tests.otlp_receiver import OtlpReceiver, Span
from tests.processes import free_port

SERVER, CLIENT = 2, 3  # OTLP SpanKind values
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "50"}  # ms: spans leave within the test's patience


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as r:
        yield r


def _traced(receiver: OtlpReceiver, trusted: bool) -> Any:
    def mutate(config: dict[str, Any]) -> None:
        config["tracing"] = {"otlp_endpoint": receiver.url, "sample_ratio": 1.0}
        if trusted:
            config["trusted_proxies"] = ["127.0.0.1/32"]

    return mutate


@pytest.fixture(scope="module")
def traced(
    tmp_path_factory: pytest.TempPathFactory, standin_server: StandinServer, receiver: OtlpReceiver
) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("traced")
    with running_gateway(tmp, standin_server, _traced(receiver, False), env=FAST_EXPORT) as gw:
        yield gw


def _get(gw: Gateway, path: str, **headers: str) -> httpx.Response:
    gw.standin.clear()
    return httpx.get(gw.url + path, headers=headers, timeout=10)


def _tree(spans: list[Span]) -> tuple[Span, dict[str, Span]]:
    (root,) = [s for s in spans if s.kind == SERVER]
    children = {s.name: s for s in spans if s.parent_id == root.span_id}
    assert len(children) == len(spans) - 1, [s.name for s in spans]
    return root, children


def test_an_allowed_request_is_one_trace_with_identify_decide_upstream(
    traced: Gateway, receiver: OtlpReceiver
) -> None:
    response = _get(traced, "/api/management/feeds/list", **{"X-ApiKey": TOKEN_CI})
    assert response.status_code == 200
    root, children = _tree(receiver.trace_of(response.headers["x-request-id"]))
    assert set(children) == {"identify", "decide", "upstream"}
    assert (root.name, root.attributes["proget_gateway.client"]) == ("GET", "ci")
    assert root.attributes["proget_gateway.decision"] == "allow"
    assert root.attributes["http.response.status_code"] == 200
    assert root.attributes["url.path"] == "/api/management/feeds/list"
    assert children["identify"].attributes["proget_gateway.credential_source"] == "header:x-apikey"
    assert children["decide"].attributes["proget_gateway.key"] == "read"  # the key's name
    assert children["decide"].attributes["proget_gateway.rule"] == 2
    upstream = children["upstream"]
    assert upstream.kind == CLIENT and upstream.attributes["http.response.status_code"] == 200
    # in order, inside the root
    assert root.start_ns <= children["identify"].start_ns <= children["decide"].start_ns
    assert children["decide"].end_ns <= upstream.start_ns and upstream.end_ns <= root.end_ns
    # ProGet got the upstream span's context, so its own spans would hang under it
    (rec,) = traced.standin.requests
    (sent,) = rec.header("traceparent")
    assert sent.startswith(f"00-{root.trace_id}-{upstream.span_id}-")  # flags: sampled (+ random id)


def test_an_untrusted_client_cannot_choose_the_trace(traced: Gateway, receiver: OtlpReceiver) -> None:
    response = _get(
        traced,
        "/api/management/feeds/list",
        **{"X-ApiKey": TOKEN_CI, "traceparent": TRACEPARENT, "tracestate": "vendor=client-chosen"},
    )
    root, _ = _tree(receiver.trace_of(response.headers["x-request-id"]))
    assert root.trace_id != CLIENT_TRACE and root.parent_id == ""
    (rec,) = traced.standin.requests
    assert CLIENT_TRACE not in rec.header("traceparent")[0]
    assert rec.header("tracestate") == []


def test_a_trusted_proxy_continues_its_trace(
    tmp_path: Path, standin_server: StandinServer, receiver: OtlpReceiver
) -> None:
    with running_gateway(tmp_path, standin_server, _traced(receiver, True), env=FAST_EXPORT) as gw:
        response = _get(
            gw,
            "/api/management/feeds/list",
            **{"X-ApiKey": TOKEN_CI, "traceparent": TRACEPARENT, "tracestate": "vendor=proxy"},
        )
        root, children = _tree(receiver.trace_of(response.headers["x-request-id"]))
        assert (root.trace_id, root.parent_id) == (CLIENT_TRACE, CLIENT_SPAN)
        (rec,) = gw.standin.requests
        (sent,) = rec.header("traceparent")
        assert sent.startswith(f"00-{CLIENT_TRACE}-{children['upstream'].span_id}-")
        assert rec.header("tracestate") == ["vendor=proxy"]


@pytest.mark.parametrize(
    ("path", "headers", "stage", "reason"),
    [
        ("/api/management/feeds/list", {"X-ApiKey": "pgw_unknown_" + "z" * 30}, "identify", "token_unknown"),
        ("/api/json/Users_CreateUser", {"X-ApiKey": TOKEN_CI}, "decide", "native_method_not_allowed"),
        (
            f"/nuget/internal/{TOKEN_CI}/index.json",
            {"X-ApiKey": TOKEN_CI},
            "upstream",
            "credential_leak_blocked",
        ),
    ],
    ids=["unknown-token", "native-method", "token-in-path"],
)
def test_a_refusal_names_its_stage_and_reason(
    traced: Gateway, receiver: OtlpReceiver, path: str, headers: dict[str, str], stage: str, reason: str
) -> None:
    response = _get(traced, path, **headers)
    assert response.headers["x-gateway-error"] == reason
    root, children = _tree(receiver.trace_of(response.headers["x-request-id"]))
    assert root.attributes["proget_gateway.reason"] == reason
    assert children[stage].attributes["proget_gateway.reason"] == reason
    assert traced.standin.requests == []


def test_no_exported_byte_holds_a_token_or_key(traced: Gateway, receiver: OtlpReceiver) -> None:
    """After every request of this module, including tokens in paths, queries and bodies."""
    _get(traced, f"/api/packages/internal/versions?name={TOKEN_CI}", **{"X-ApiKey": TOKEN_CI})
    _get(traced, f"/upack/internal/{TOKEN_CI}", Authorization=f"Bearer {TOKEN_CI}")
    last = httpx.post(
        traced.url + "/api/json/Feeds_GetFeeds",
        json={"API_Key": TOKEN_CI, "Feed_Name": TOKEN_CI},
        headers={"X-ApiKey": TOKEN_CI},
        timeout=10,
    )
    receiver.trace_of(last.headers["x-request-id"])
    raw = receiver.raw()
    assert len(receiver.spans()) >= 20
    for secret in (TOKEN_CI, KEY_READ, KEY_PUSH, KEY_NATIVE, "pgw_unknown_"):
        assert secret.encode() not in raw, secret
    assert set(receiver.paths) == {"/v1/traces"}


def test_with_tracing_off_no_client_trace_context_reaches_proget(gateway: Gateway) -> None:
    response = _get(
        gateway,
        "/api/management/feeds/list",
        **{"X-ApiKey": TOKEN_CI, "traceparent": TRACEPARENT, "tracestate": "vendor=x"},
    )
    assert response.status_code == 200
    (rec,) = gateway.standin.requests
    assert (rec.header("traceparent"), rec.header("tracestate")) == ([], [])


def test_spans_still_queued_are_exported_at_shutdown(
    tmp_path: Path, standin_server: StandinServer, receiver: OtlpReceiver
) -> None:
    """The SDK's default 5 s export delay: a request just before SIGTERM is flushed on the way out."""
    with running_gateway(tmp_path, standin_server, _traced(receiver, False)) as gw:
        response = _get(gw, "/api/management/feeds/list", **{"X-ApiKey": TOKEN_CI})
        gw.process.send_signal(signal.SIGTERM)
        assert gw.process.wait(timeout=10) == 0
    assert len(_tree(receiver.trace_of(response.headers["x-request-id"], timeout=1))[1]) == 3


def test_a_dead_collector_neither_fails_requests_nor_holds_the_exit(
    tmp_path: Path, standin_server: StandinServer
) -> None:
    def dead(config: dict[str, Any]) -> None:
        config["tracing"] = {"otlp_endpoint": f"http://127.0.0.1:{free_port()}"}

    with running_gateway(tmp_path, standin_server, dead, env=FAST_EXPORT) as gw:
        for _ in range(20):
            assert _get(gw, "/api/management/feeds/list", **{"X-ApiKey": TOKEN_CI}).status_code == 200
        time.sleep(0.5)  # the exporter is retrying now
        started = time.monotonic()
        gw.process.send_signal(signal.SIGTERM)
        assert gw.process.wait(timeout=15) == 0
        took = time.monotonic() - started
    # drain_delay 0 + nothing in flight + at most FLUSH_AT_EXIT_S for the exporter, plus start-up slack
    assert took < FLUSH_AT_EXIT_S + 1.5, f"exited {took:.1f} s after SIGTERM"
