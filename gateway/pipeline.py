"""The order of the stages, written once.

request head checked → canonical path → body plan → credentials found → client identified →
policy decides the key → request rewritten → egress guard → admitted under limits →
forwarded and streamed → audited.

Each stage is a module with one main function. Stages raise :mod:`gateway.errors`; this module is the
one handler: before the response has started an error is rendered (``responses.send_error``); after,
the stream is aborted. Whatever happens, exactly one audit line and one metrics observation are
written, in ``finally``.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway import audit, metrics
from gateway.admission import Admission
from gateway.audit import Flow
from gateway.bodies import InspectionBudget, read_capped
from gateway.canonical import canonicalize
from gateway.credentials import BodyKind, body_kind, find_credentials
from gateway.egress import check_egress, presented
from gateway.errors import ClientAborted, GatewayError, InternalError, ShutdownAborted, TokenExpired
from gateway.forward import forward
from gateway.framing import check_head
from gateway.identity import identify
from gateway.policy import decide
from gateway.redact import redact_error, redact_exception
from gateway.responses import send_error
from gateway.rewrite import client_view, is_trusted, rewrite_request
from gateway.settings import Config
from gateway.status import Recent
from gateway.types import Receive, Scope, Send
from gateway.upstream import UpstreamClient
from gateway.workload_identity import JwtVerifier

if TYPE_CHECKING:
    from gateway.tracing import Tracer

RAW_TARGET = "proget_gateway.raw_target"  # scope key set by gateway.http1 with the request line's target


class StreamAborted(Exception):
    """Raised to the server after a response started, so it closes the connection mid-body."""


@dataclass(slots=True)
class Runtime:
    config: Config
    upstream: UpstreamClient
    jwt: JwtVerifier | None = None  # workload identity: key sets and verified tokens, for the process
    admission: Admission | None = None  # limits protecting ProGet (gateway/admission.py)
    inspection: InspectionBudget = field(init=False)  # bytes of inspected bodies held at once
    recent: Recent = field(init=False)  # the admin status page's memory (gateway/status.py)
    draining: bool = False  # shutting down: /readyz answers 503 (gateway/server.py)
    tracer: Tracer | None = None  # OpenTelemetry, when on (gateway/tracing.py); fixed until a restart

    def __post_init__(self) -> None:
        self.inspection = budget = InspectionBudget(self.config.settings.limits.max_inspected_bytes_in_flight)
        self.recent = Recent(self.config.settings.status_page.recent)
        metrics.publish_lifetimes(self.config)
        # read at scrape time: nothing on the hot path
        metrics.INSPECTED_HELD.labels("all").set_function(lambda: budget.held)
        metrics.INSPECTED_HELD.labels("anonymous").set_function(lambda: budget.anonymous_held)

    def adopt(
        self, config: Config, upstream: UpstreamClient, jwt: JwtVerifier | None, admission: Admission | None
    ) -> None:
        """Swap in a reloaded snapshot; requests already running keep the one they read at their start.
        The inspection budget and the status page's memory keep what they hold and take the new sizes."""
        self.config, self.upstream, self.jwt, self.admission = config, upstream, jwt, admission
        self.inspection.resize(config.settings.limits.max_inspected_bytes_in_flight)
        self.recent.resize(config.settings.status_page.recent)
        metrics.publish_lifetimes(config)


_ID_PREFIX = os.urandom(4).hex()  # per process: ids from several replicas do not collide
_ids = itertools.count(1)


def new_request_id() -> str:
    """Unique per process and cheap: a random prefix and a counter (an ``os.urandom`` syscall per
    request was 2 % of the gateway's CPU). Request ids are correlation handles, not secrets."""
    return f"{_ID_PREFIX}{next(_ids):08x}"


def raw_target(scope: Scope) -> bytes:
    """The request-target as sent; rebuilt from the scope when the server did not record it."""
    target = scope.get(RAW_TARGET)
    if isinstance(target, bytes):
        return target
    query: bytes = scope.get("query_string", b"")
    path: bytes = scope.get("raw_path") or scope["path"].encode("latin-1")
    return path + (b"?" + query if query else b"")


async def handle(scope: Scope, receive: Receive, send: Send, runtime: Runtime) -> None:
    """Serve one HTTP request through every stage."""
    client = scope.get("client")
    flow = Flow(request_id=new_request_id(), method=scope["method"], peer=client[0] if client else "-")
    try:
        await _stages(flow, scope, receive, send, runtime)
    except GatewayError as error:
        try:
            await _refuse(flow, ClientAborted() if flow.client_gone else error, send)
        finally:
            _forget_frames(error)
    except asyncio.CancelledError as cancelled:
        if not flow.client_gone:
            flow.fail(ShutdownAborted())  # the server cancels what outlives shutdown.timeout
            raise
        _forget_frames(cancelled)
        _uncancel()
        flow.fail(ClientAborted())
    except Exception as unexpected:
        await _refuse(flow, InternalError(), send)
        redact_exception(unexpected, flow.secrets)  # the server logs it: no credential in its message
        raise
    finally:
        if flow.release is not None:
            flow.release()
        flow.duration_s = time.perf_counter() - flow.started
        fields = audit.emit(flow)
        metrics.observe(flow)
        runtime.recent.record(flow)
        if flow.trace is not None:
            flow.trace.finish(fields)  # the audit line's redacted fields: nothing else reaches a span


def _forget_frames(error: BaseException) -> None:
    """Drop a handled error's traceback. It holds the request's frames, and they hold what holds the
    error (the flow; the connection to ProGet, which keeps its first error): a cycle only the garbage
    collector would free, which runs rarely (gateway/app.py), keeping a refused request's inspected
    body or an abandoned upload's chunk alive after the request ended. tests/unit/test_no_cycles.py."""
    error.__traceback__ = None


def _uncancel() -> None:
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()


async def _refuse(flow: Flow, error: GatewayError, send: Send) -> None:
    flow.fail(error)
    if isinstance(error, TokenExpired):
        flow.token_label = error.label
    if isinstance(error, ClientAborted):
        return
    if flow.response_started:
        raise StreamAborted(error.code) from None
    await send_error(send, redact_error(error, flow.secrets), flow.request_id)


async def _stages(flow: Flow, scope: Scope, receive: Receive, send: Send, runtime: Runtime) -> None:
    # one snapshot per request: a reload swaps these together and never under a running request
    config, jwt, admission, upstream = runtime.config, runtime.jwt, runtime.admission, runtime.upstream
    flow.generation = config.generation
    limits = config.settings.limits
    headers: list[tuple[bytes, bytes]] = list(scope["headers"])  # a snapshot: what is checked is sent
    target_bytes = raw_target(scope)
    flow.secrets = presented(headers)  # redacted from the log even if the request is refused below
    flow.raw_target = target_bytes  # logged as sent (made safe) if refused before canonicalized
    if runtime.tracer is not None:
        flow.trace = runtime.tracer.begin(flow.method, headers, is_trusted(flow.peer, config))

    head = check_head(flow.method, headers, limits)
    target = canonicalize(target_bytes, max_target_bytes=limits.max_target_bytes)
    flow.path, flow.native_method = target.path, target.native_method

    kind = body_kind(target, head)
    if flow.trace is not None:
        flow.trace.stage("identify")  # finding the credential, reading an inspected body, verifying
    body = None
    if kind is not BodyKind.STREAM and head.has_body:
        # A credential in the head is checked before a body is held: strangers cannot make us buffer.
        early = find_credentials(headers, target, None, BodyKind.STREAM, limits)
        if early.token is not None:
            await identify(early, config, jwt)
        hold = runtime.inspection.hold(flow, anonymous=early.token is None)
        body = await read_capped(
            receive, head, limits.max_rewrite_body_bytes, flow, limits.body_timeout, hold
        )
    credentials = find_credentials(headers, target, body, kind, limits)
    if credentials.token is not None:
        flow.secrets = flow.secrets.adding(credentials.token.encode("utf-8", "surrogateescape"))
    flow.credential_source = ",".join(credentials.sources) or "none"
    if credentials.query:
        flow.path += "?" + audit.query_names(credentials.query)

    identity = await identify(credentials, config, jwt)
    flow.client, flow.subject, flow.issuer = identity.client.name, identity.subject, identity.issuer
    flow.token_label = identity.label
    if flow.trace is not None:
        flow.trace.stage("decide")
    decision = decide(identity.client, flow.method, target, config)
    flow.key, flow.rule, flow.reason = decision.key, decision.rule, f"rule:{decision.rule}"

    key = config.keys[decision.key]
    view = client_view(flow.peer, scope.get("scheme", "http"), head, headers, config)
    trace_headers = flow.trace.upstream() if flow.trace is not None else None
    request = rewrite_request(
        flow.method, target, headers, head, credentials, key, view, config, flow.request_id, trace_headers
    )
    check_egress(request, flow.secrets)  # the backstop: nothing presented leaves, in any encoding
    flow.decision = "allow"
    upload = request.body is None and head.has_body
    admitted = admission.admit(flow, identity.client.name, upload) if admission else nullcontext()
    async with admitted:  # after the decision: refused requests cost ProGet nothing
        if flow.trace is not None and admission is not None:
            flow.trace.event("admitted")
        await forward(flow, request, head, key, view, upstream, config, receive, send)
