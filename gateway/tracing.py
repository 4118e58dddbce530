"""Optional OpenTelemetry traces: a server span per request with ``identify``, ``decide`` and ``upstream``.

Off by default. It is on when the config has a ``tracing`` section or the standard
``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set (and ``OTEL_SDK_DISABLED``
is not ``true``); what the section leaves out (exporter headers, timeout, sampler, resource) comes from
the other ``OTEL_*`` variables, read by the SDK itself. Off, the pipeline's only cost is a ``None``
check per stage: nothing here runs, and the client's trace headers are removed as always.

Trace context: a client's ``traceparent``/``tracestate`` are continued only from ``trusted_proxies``;
anyone else starts a new trace (and its headers are never forwarded). ProGet receives the ``traceparent``
of the gateway's ``upstream`` span, so its own traces, if any, hang under ours.

Nothing secret can reach a span, by construction: every attribute is taken from the audit line's
fields *after* the one redactor (:func:`gateway.audit.emit`), spans are ended in the request's
``finally`` when those fields are final, and exceptions are never recorded (a message may hold a
value the client sent). Names, codes and numbers only: client, rule, key *name*, reason, status.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway import __version__
from gateway.rewrite import trace_context
from gateway.settings import Config, Tracing, trace_sample_ratio

log = logging.getLogger("proget_gateway.tracing")
_PROPAGATOR = TraceContextTextMapPropagator()
FLUSH_AT_EXIT_S = 2.0

# audit field → span attribute, per span (OpenTelemetry's names where one exists)
_ROOT = {
    "request_id": "proget_gateway.request_id",
    "method": "http.request.method",
    "path": "url.path",
    "status": "http.response.status_code",
    "peer": "client.address",
    "decision": "proget_gateway.decision",
    "reason": "proget_gateway.reason",
    "client": "proget_gateway.client",
    "native_method": "proget_gateway.native_method",
    "config_generation": "proget_gateway.config_generation",
}
_STAGES = {
    "identify": {
        "client": "proget_gateway.client",
        "credential_source": "proget_gateway.credential_source",
        "token_label": "proget_gateway.token_label",
        "sub": "proget_gateway.jwt.sub",
        "issuer": "proget_gateway.jwt.issuer",
    },
    "decide": {"client": "proget_gateway.client", "rule": "proget_gateway.rule", "key": "proget_gateway.key"},
    "upstream": {
        "method": "http.request.method",
        "key": "proget_gateway.key",
        "status": "http.response.status_code",
        "bytes_in": "http.request.body.size",
        "bytes_out": "http.response.body.size",
        "limit": "proget_gateway.limit",
    },
}


class Tracer:
    """The process's tracer provider and exporter; :meth:`begin` starts one request's trace."""

    def __init__(self, config: Config, exporter: SpanExporter | None = None) -> None:
        settings = config.settings.tracing or Tracing()
        ratio = trace_sample_ratio(config.settings, os.environ)  # None: the SDK reads OTEL_TRACES_SAMPLER
        sampler = None if ratio is None else ParentBased(TraceIdRatioBased(ratio))
        named = config.settings.tracing is not None or not os.environ.get("OTEL_SERVICE_NAME")
        resource = Resource.create(
            {"service.version": __version__} | ({"service.name": settings.service_name} if named else {})
        )
        self._provider = TracerProvider(resource=resource, sampler=sampler, shutdown_on_exit=False)
        endpoint = f"{settings.otlp_endpoint}/v1/traces" if settings.otlp_endpoint else None
        self._provider.add_span_processor(BatchSpanProcessor(exporter or OTLPSpanExporter(endpoint=endpoint)))
        self._tracer = self._provider.get_tracer("proget-gateway", __version__)

    def begin(self, method: str, headers: list[tuple[bytes, bytes]], trusted: bool) -> RequestTrace:
        """The request's server span: continuing a trusted proxy's trace context, else a new trace."""
        parent = _PROPAGATOR.extract(dict(trace_context(headers))) if trusted else Context()
        root = self._tracer.start_span(
            method, parent, SpanKind.SERVER, record_exception=False, set_status_on_exception=False
        )
        return RequestTrace(self._tracer, root)

    def flush(self) -> None:
        """Export what is queued now (the batch processor otherwise waits up to 5 s)."""
        self._provider.force_flush()

    def shutdown(self) -> None:
        """Export what is still queued, for at most :data:`FLUSH_AT_EXIT_S`, and stop: a collector that
        is down must not hold the process past its shutdown (the SDK's own bound is 30 s)."""
        stopping = threading.Thread(target=self._provider.shutdown, name="otel-shutdown", daemon=True)
        stopping.start()
        stopping.join(FLUSH_AT_EXIT_S)  # still retrying then: the daemon thread ends with the process


@dataclass(slots=True)
class _Mark:
    name: str
    start_ns: int


class RequestTrace:
    """One request's spans. Stages are marked as the pipeline enters them; ``identify`` and ``decide``
    are written when the request ends (with explicit times), ``upstream`` is started live because
    ProGet must receive its ``traceparent``. All attributes are set in :meth:`finish`."""

    __slots__ = ("_marks", "_root", "_tracer", "_upstream")

    def __init__(self, tracer: trace.Tracer, root: Span) -> None:
        self._tracer, self._root = tracer, root
        self._marks: list[_Mark] = []
        self._upstream: Span | None = None

    def stage(self, name: str) -> None:
        self._marks.append(_Mark(name, time.time_ns()))

    def upstream(self) -> list[tuple[str, str]]:
        """Start the ``upstream`` span; the headers that carry its context to ProGet."""
        self.stage("upstream")
        self._upstream = self._tracer.start_span(
            "upstream",
            trace.set_span_in_context(self._root),
            SpanKind.CLIENT,
            start_time=self._marks[-1].start_ns,
            record_exception=False,
            set_status_on_exception=False,
        )
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, trace.set_span_in_context(self._upstream))
        return list(carrier.items())

    def event(self, name: str) -> None:
        """A moment inside the upstream span (``admitted``: the limits let it through)."""
        if self._upstream is not None:
            self._upstream.add_event(name)

    def finish(self, fields: Mapping[str, object]) -> None:
        """End every span with attributes from the audit line's redacted ``fields``. Traces are
        diagnostics: a failure here is logged (without the exception's message) and the request's
        outcome stands."""
        try:
            self._finish(fields)
        except Exception as exc:  # never let the tracer fail a request
            log.warning("tracing: could not record a request's spans (%s)", type(exc).__name__)

    def _finish(self, fields: Mapping[str, object]) -> None:
        end = time.time_ns()
        if not self._root.is_recording():  # sampled out: children were never recorded either
            return
        failed = fields.get("decision") == "error"
        parent = trace.set_span_in_context(self._root)
        for i, mark in enumerate(self._marks):
            last = i == len(self._marks) - 1
            attributes = _attributes(fields, _STAGES.get(mark.name, {}), with_reason=last)
            span = self._upstream if mark.name == "upstream" else None
            if span is None:
                span = self._tracer.start_span(
                    mark.name, parent, attributes=attributes, start_time=mark.start_ns,
                    record_exception=False, set_status_on_exception=False,
                )  # fmt: skip
            else:
                span.set_attributes(attributes)
            if failed and last:
                span.set_status(Status(StatusCode.ERROR, str(fields.get("reason", ""))))
            span.end(end_time=end if last else self._marks[i + 1].start_ns)
        self._root.set_attributes(_attributes(fields, _ROOT, with_reason=False))
        if failed:
            self._root.set_status(Status(StatusCode.ERROR, str(fields.get("reason", ""))))
        self._root.end(end_time=end)


def _attributes(
    fields: Mapping[str, object], names: Mapping[str, str], *, with_reason: bool
) -> dict[str, Any]:
    """The span's attributes: the named audit fields that have a value (strings, numbers); the stage a
    request ended in also carries the reason."""
    out = {a: v for f, a in names.items() if isinstance(v := fields.get(f), str | int | float) and v != ""}
    reason = fields.get("reason")
    if with_reason and isinstance(reason, str) and reason:
        out["proget_gateway.reason"] = reason
    return out
