"""Every metric name and label set, in one place. Labels are bounded: client names come from the
config, codes from errors.py, status as a class; never a path, a token or an address."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gateway.audit import Flow
from gateway.errors import Throttled
from gateway.settings import Config
from gateway.tally import PlainCounter, PlainHistogram

REGISTRY = CollectorRegistry(auto_describe=True)
_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)  # durations

# Recorded for every request: plain numbers, no lock per value (gateway/tally.py).
REQUESTS = PlainCounter(
    "proget_gateway_requests",
    "Requests handled, by client, decision, code and status class.",
    ["client", "decision", "code", "status_class"],
)
LATENCY = PlainHistogram(
    "proget_gateway_request_duration_seconds",
    "Time from request head to the end of the response.",
    _SECONDS,
    ["decision"],
)
UPSTREAM_RESPONSE = PlainHistogram(
    "proget_gateway_upstream_response_seconds",
    "Time ProGet took to answer: from sending the request (the whole upload, for a streamed body) to its "
    "response head. Separates ProGet's time from the gateway's and the client's.",
    _SECONDS,
)
BYTES = PlainCounter("proget_gateway_body_bytes", "Body bytes relayed, by direction.", ["direction"])
for _family in (REQUESTS, LATENCY, UPSTREAM_RESPONSE, BYTES):
    REGISTRY.register(_family)
_BYTES_IN, _BYTES_OUT, _UPSTREAM = BYTES.child("in"), BYTES.child("out"), UPSTREAM_RESPONSE.child()
UPSTREAM_ERRORS = Counter(
    "proget_gateway_upstream_errors", "Failures talking to ProGet, by code.", ["code"], registry=REGISTRY
)
AUTH_FAILURES = Counter(
    "proget_gateway_auth_failures", "Refused credentials, by reason code.", ["reason"], registry=REGISTRY
)

# --- limits that protect ProGet (gateway/admission.py) ---------------------------------------------
LIMIT_REFUSALS = Counter(
    "proget_gateway_limit_refusals",
    "Requests a limit refused (mode=enforce) or would have refused (mode=shadow), by client and code.",
    ["client", "reason", "mode"],
    registry=REGISTRY,
)
INSPECTED_HELD = Gauge(
    "proget_gateway_inspected_bytes_held",
    "Bytes of inspected request bodies held at once (limits.max_inspected_bytes_in_flight caps it).",
    ["who"],
    registry=REGISTRY,
)
CONFIG_RELOADS = Counter(
    "proget_gateway_config_reloads",
    "Config reloads, by result (success/failure).",
    ["result"],
    registry=REGISTRY,
)
for _result in ("success", "failure"):  # exported from the start at 0, so increase() and alerts see them
    CONFIG_RELOADS.labels(_result)
CONFIG_LAST_SUCCESS = Gauge(
    "proget_gateway_config_last_reload_success_timestamp_seconds",
    "When the config in use was loaded (start or last successful reload), Unix seconds.",
    registry=REGISTRY,
)
CONFIG_GENERATION = Gauge(
    "proget_gateway_config_generation",
    "The config generation in use: 1 at start, +1 per reload.",
    registry=REGISTRY,
)
TOKEN_EXPIRY = Gauge(
    "proget_gateway_token_expiry_seconds",
    "Seconds until the earliest not_after among a client's tokens (clients with one only).",
    ["client"],
    registry=REGISTRY,
)
KEY_EXPIRY = Gauge(
    "proget_gateway_key_expiry_seconds",
    "Seconds until a ProGet key's declared expires (keys that declare one only).",
    ["key"],
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "proget_gateway_upstream_queue_depth", "Requests waiting for an upstream slot.", registry=REGISTRY
)
IN_FLIGHT = Gauge(
    "proget_gateway_upstream_in_flight", "Requests holding an upstream slot.", registry=REGISTRY
)
QUEUE_WAIT = Histogram(
    "proget_gateway_upstream_queue_wait_seconds",
    "Time a request waited in the queue for an upstream slot (admitted or not).",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
LIMIT_BACKEND_ERRORS = Counter(
    "proget_gateway_rate_limit_backend_errors",
    "Rate-limit store calls that failed or timed out, by backend.",
    ["backend"],
    registry=REGISTRY,
)

# --- ProGet's own component health (gateway/upstream_health.py), never gateway readiness -------------
UPSTREAM_HEALTH = Gauge(
    "proget_upstream_health",
    "ProGet component status from /health/json: 1 OK, 0 error or unknown.",
    ["component"],
    registry=REGISTRY,
)
UPSTREAM_INFO = Gauge(
    "proget_upstream_info", "ProGet's version from /health/json (value 1).", ["version"], registry=REGISTRY
)


_Cells = tuple[list[float], list[float]]
_cells: dict[tuple[str, str, str, str], _Cells] = {}


def _bound(client: str, decision: str, code: str, status_class: str) -> _Cells:
    """The request counter's and the latency histogram's cells for one label set, looked up once per
    label set (bounded: see the module docstring)."""
    key = (client, decision, code, status_class)
    cells = _cells.get(key)
    if cells is None:
        cells = _cells[key] = (REQUESTS.child(*key), LATENCY.child(decision))
    return cells


def observe(flow: Flow) -> None:
    """Record one finished request."""
    status_class = f"{flow.status // 100}xx" if flow.status else "none"
    requests, latency = _bound(flow.client or "-", flow.decision, flow.code, status_class)
    requests[0] += 1
    LATENCY.observe(latency, flow.duration_s)
    if flow.upstream_s is not None:
        UPSTREAM_RESPONSE.observe(_UPSTREAM, flow.upstream_s)
    if flow.error is not None:
        if isinstance(flow.error, Throttled):
            pass  # counted by gateway.admission, with the client, where shadow refusals are counted too
        elif flow.error.code.startswith("upstream_"):
            UPSTREAM_ERRORS.labels(flow.error.code).inc()
        elif flow.error.status == 401:
            AUTH_FAILURES.labels(flow.error.code).inc()
    _BYTES_IN[0] += flow.bytes_in
    _BYTES_OUT[0] += flow.bytes_out


def publish_lifetimes(config: Config) -> None:
    """Point the expiry gauges at this config's lifetimes (read at scrape time: nothing per request)."""
    TOKEN_EXPIRY.clear()
    KEY_EXPIRY.clear()
    for client in config.settings.clients:
        ends = [t.not_after.timestamp() for t in client.tokens if t.not_after is not None]
        if ends:
            TOKEN_EXPIRY.labels(client.name).set_function(_seconds_until(min(ends)))
    for name, source in config.settings.keys.items():
        if source.expires is not None:
            KEY_EXPIRY.labels(name).set_function(_seconds_until(source.expires.timestamp()))


def _seconds_until(end: float) -> Callable[[], float]:
    return lambda: end - time.time()
