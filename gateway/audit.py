"""Exactly one JSON line per request — success, denial, error or abort — written when it ends.

The line is built from the request's :class:`Flow` and holds names, never values: the client's name,
where its credential was found, the key's name, and the canonical path with the credential query
parameters already removed. A request refused before its path was understood is logged with the raw
path only (query dropped, control bytes escaped, truncated), because its query was never checked.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from gateway.errors import GatewayError

logger = logging.getLogger("proget_gateway.audit")


@dataclass(slots=True)
class Flow:
    """Everything known about one request, filled in stage by stage; read once by ``emit``."""

    request_id: str
    method: str
    peer: str
    started: float = field(default_factory=time.perf_counter)
    path: str = ""
    native_method: str | None = None
    client: str | None = None
    subject: str | None = None  # workload identity: the verified JWT `sub` (never the token)
    issuer: str | None = None  # workload identity: the verified JWT `iss`
    credential_source: str | None = None
    key: str | None = None
    rule: int | None = None
    decision: str = "deny"
    reason: str = ""
    status: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    response_started: bool = False
    request_body_done: bool = True
    response_done: bool = False
    client_gone: bool = False
    duration_s: float = 0.0
    error: GatewayError | None = None
    limit: str | None = None  # gateway.admission: "would_refuse:<code>" (shadow), "backend_error"

    def fail(self, error: GatewayError) -> None:
        self.error = error
        self.reason = error.code
        self.decision = "error" if error.status >= 500 or error.status == 499 else "deny"
        if not self.response_started:
            self.status = error.status

    @property
    def code(self) -> str:
        """The stable code for metrics: the error's, or ``ok``."""
        return self.error.code if self.error else "ok"


def query_names(query: bytes, limit: int = 256) -> str:
    """The query's parameter names, values elided: a value may be a secret in a channel we do not know."""
    names = (piece.partition(b"=") for piece in query.split(b"&"))
    shown = "&".join(name.decode("ascii") + ("=…" if sep else "") for name, sep, _ in names)
    return shown[:limit]


def safe_raw_path(raw_target: bytes, limit: int = 256) -> str:
    """The path part of a target we could not canonicalize, made printable and short."""
    path = raw_target.split(b"?", 1)[0][:limit]
    return path.decode("ascii", "backslashreplace").encode("unicode_escape").decode("ascii")


def event(flow: Flow) -> dict[str, object]:
    return {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "request_id": flow.request_id,
        "client": flow.client,
        "sub": flow.subject,
        "issuer": flow.issuer,
        "credential_source": flow.credential_source,
        "key": flow.key,
        "method": flow.method,
        "path": flow.path,
        "native_method": flow.native_method,
        "decision": flow.decision,
        "reason": flow.reason,
        "status": flow.status,
        "bytes_in": flow.bytes_in,
        "bytes_out": flow.bytes_out,
        "duration_ms": round(flow.duration_s * 1000, 3),
        "peer": flow.peer,
        "limit": flow.limit,
    }


def emit(flow: Flow) -> None:
    logger.info(json.dumps(event(flow), separators=(",", ":")))


def configure(stream: object = None) -> None:
    """Send audit lines, bare, to stdout (or ``stream``); the platform's log shipper takes it from there."""
    handler = logging.StreamHandler(stream or sys.stdout)  # type: ignore[arg-type]
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
