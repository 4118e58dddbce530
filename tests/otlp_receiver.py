"""A real OTLP/HTTP trace receiver on 127.0.0.1 for the tests: it accepts ``POST /v1/traces``
(protobuf, as the OpenTelemetry exporter sends it), keeps every body as received and decodes the spans
with OpenTelemetry's own protobuf definitions."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


@dataclass(frozen=True)
class Span:
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int
    attributes: dict[str, Any]
    status_code: int
    events: tuple[str, ...]
    start_ns: int
    end_ns: int


class OtlpReceiver:
    """Start with ``with OtlpReceiver() as r``; ``r.url`` is the OTLP base URL (``/v1/traces`` added)."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.paths: list[str] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver._lock:
                    receiver.bodies.append(body)
                    receiver.paths.append(self.path)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def raw(self) -> bytes:
        with self._lock:
            return b"".join(self.bodies)

    def spans(self) -> list[Span]:
        with self._lock:
            bodies = list(self.bodies)
        out = []
        for body in bodies:
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    out += [_span(s) for s in scope.spans]
        return out

    def trace_of(self, request_id: str, timeout: float = 10.0) -> list[Span]:
        """Every span of the trace whose server span carries ``request_id``. Waits for that span: it is
        ended last, so its children were exported in the same batch or an earlier one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            spans = self.spans()
            roots = [s for s in spans if s.attributes.get("proget_gateway.request_id") == request_id]
            if roots:
                return [s for s in spans if s.trace_id == roots[0].trace_id]
            time.sleep(0.05)
        raise AssertionError(f"no trace for request {request_id} within {timeout} s")


def _span(s: Any) -> Span:
    return Span(
        name=s.name,
        trace_id=s.trace_id.hex(),
        span_id=s.span_id.hex(),
        parent_id=s.parent_span_id.hex(),
        kind=s.kind,
        attributes={a.key: _value(a.value) for a in s.attributes},
        status_code=s.status.code,
        events=tuple(e.name for e in s.events),
        start_ns=s.start_time_unix_nano,
        end_ns=s.end_time_unix_nano,
    )


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None
