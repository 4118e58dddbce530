"""gateway/tracing.py with the SDK's in-memory exporter: the span tree, and — for any secret the client
presented, hidden anywhere in what the audit line records — no exported name, attribute, event or
status holds it in any form the needles know."""

from __future__ import annotations

import base64
import urllib.parse
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway import audit
from gateway.audit import Flow
from gateway.errors import CredentialLeakBlocked
from gateway.needles import Needles
from gateway.settings import build_config
from gateway.tracing import Tracer

CONFIG = build_config(
    {
        "upstream": {"url": "http://p"},
        "keys": {"k": {"value": "the-proget-key"}},
        "clients": [{"name": "ci", "anonymous": True, "rules": [{"key": "k"}]}],
        "tracing": {"otlp_endpoint": "http://collector:4318"},
    },
    env={},
)
EXPORTER = InMemorySpanExporter()
TRACER = Tracer(CONFIG, EXPORTER)
SECRET = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=8, max_size=40)


def _traced(flow: Flow, stages: list[str]) -> list[ReadableSpan]:
    EXPORTER.clear()
    trace = TRACER.begin(flow.method, [], trusted=False)
    for stage in stages:
        if stage == "upstream":
            trace.upstream()
        else:
            trace.stage(stage)
    trace.finish(audit.event(flow))
    TRACER.flush()
    return list(EXPORTER.get_finished_spans())


def _everything(spans: list[ReadableSpan]) -> str:
    """Every value a span carries. Span, event and attribute *names* are the gateway's own constants
    (a generated secret such as ``CONFIG_G`` may spell part of one without having reached the span)."""
    parts: list[Any] = []
    for s in spans:
        parts += [s.status.description, *(s.attributes or {}).values()]
    return "\n".join(str(p) for p in parts)


def test_an_allowed_request_is_a_server_span_with_three_children() -> None:
    flow = Flow(request_id="r1", method="GET", peer="192.0.2.1", path="/nuget/f/v3/index.json")
    flow.client, flow.key, flow.rule, flow.decision, flow.reason, flow.status = (
        "ci",
        "k",
        0,
        "allow",
        "rule:0",
        200,
    )
    spans = _traced(flow, ["identify", "decide", "upstream"])
    (root,) = [s for s in spans if s.parent is None]
    children = {s.name: s for s in spans if s.parent is not None}
    assert set(children) == {"identify", "decide", "upstream"}
    assert all(s.parent is not None and s.parent.span_id == root.context.span_id for s in children.values())
    assert root.attributes is not None and root.attributes["proget_gateway.client"] == "ci"
    assert children["decide"].attributes == {
        "proget_gateway.client": "ci",
        "proget_gateway.rule": 0,
        "proget_gateway.key": "k",
    }


@settings(max_examples=200, deadline=None)
@given(
    secret=SECRET,
    where=st.sampled_from(["path", "raw", "percent", "base64", "userinfo"]),
    stages=st.sampled_from([["identify"], ["identify", "decide"], ["identify", "decide", "upstream"]]),
)
def test_no_form_of_a_presented_secret_reaches_a_span(secret: str, where: str, stages: list[str]) -> None:
    hidden = {
        "path": secret,
        "raw": "x" + secret + "y",
        "percent": urllib.parse.quote(secret, safe=""),
        "base64": base64.b64encode(secret.encode()).decode(),
        "userinfo": f"http://u:{urllib.parse.quote(secret, safe='')}@h/",
    }[where]
    flow = Flow(request_id="r2", method="GET", peer="192.0.2.1", path="/api/" + hidden)
    flow.secrets = Needles.of([secret.encode()])
    flow.fail(CredentialLeakBlocked())
    spans = _traced(flow, stages)
    assert len(spans) == len(stages) + 1
    text = _everything(spans)
    assert not flow.secrets.found_in(text.encode()), text
    assert secret not in text


class _Broken(dict[str, object]):
    def get(self, *_: object) -> object:  # type: ignore[override]
        raise RuntimeError("secret-bearing message")


def test_a_failure_while_recording_spans_is_logged_and_never_raised(caplog: Any) -> None:
    trace = TRACER.begin("GET", [], trusted=False)
    trace.stage("identify")
    trace.finish(_Broken())  # must not raise into the request's finally block
    assert "could not record a request's spans (RuntimeError)" in caplog.text
    assert "secret-bearing" not in caplog.text
