"""Exactly one JSON line per request — success, denial, error or abort — written when it ends.

The line is built from the request's :class:`Flow` and holds names, never values: the client's name,
where its credential was found, the key's name, and the canonical path with the credential query
parameters already removed. A request refused before its path was understood is logged with the raw
path only (query dropped, control bytes escaped, truncated), because its query was never checked.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING

import orjson

from gateway.errors import GatewayError
from gateway.needles import NO_NEEDLES, Needles
from gateway.redact import PLACEHOLDER, checked_line

if TYPE_CHECKING:
    from gateway.tracing import RequestTrace


@dataclass(slots=True)
class Flow:
    """Everything known about one request, filled in stage by stage; read once by ``emit``."""

    request_id: str
    method: str
    peer: str
    started: float = field(default_factory=time.perf_counter)
    path: str = ""  # the canonical path (and query names) once understood; see shown_path
    raw_target: bytes = b""  # the target as sent: logged (made safe) only if it was never understood
    native_method: str | None = None
    client: str | None = None
    subject: str | None = None  # workload identity: the verified JWT `sub` (never the token)
    issuer: str | None = None  # workload identity: the verified JWT `iss`
    credential_source: str | None = None
    generation: int = 0  # the config generation this request was decided under
    token_label: str | None = None  # the configured label of the gateway token used, if it has one
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
    upstream_s: float | None = None  # request sent → ProGet's response head (gateway/forward.py)
    error: GatewayError | None = None
    limit: str | None = None  # gateway.admission: "would_refuse:<code>" (shadow), "backend_error"
    release: Callable[[], None] | None = None  # gives back what gateway.bodies held for this request
    secrets: Needles = NO_NEEDLES  # every form of what the client presented
    trace: RequestTrace | None = None  # its spans, when tracing is on (gateway/tracing.py)

    def fail(self, error: GatewayError) -> None:
        self.error = error
        self.reason = error.code
        self.decision = "error" if error.status >= 500 or error.status == 499 else "deny"
        if not self.response_started:
            self.status = error.status

    def shown_path(self) -> str:
        """The path for the log and the status page: canonical, or the raw one made safe (computed
        only for the requests refused before their path was understood, not for every request).

        A raw path holding a presented credential is shown as ``***`` whole: made safe, its bytes
        outside ASCII are written as ``\\xNN`` text, a spelling the redactor does not read back."""
        if self.path:
            return self.path
        return PLACEHOLDER if self.secrets.found_in(self.raw_target) else safe_raw_path(self.raw_target)

    @property
    def code(self) -> str:
        """The stable code for metrics: the error's, or ``ok``."""
        return self.error.code if self.error else "ok"


def query_names(query: bytes, limit: int = 256) -> str:
    """The query's parameter names, values elided: a value may be a secret in a channel we do not know.

    The elision is ASCII (``=...``): a line that is ASCII as made is written as orjson made it, where
    a ``…`` had to be escaped (``json``'s encoder, ~3.5 µs) and read back by the redactor's check."""
    names = (piece.partition(b"=") for piece in query.split(b"&"))
    shown = "&".join(name.decode("ascii") + ("=..." if sep else "") for name, sep, _ in names)
    return shown[:limit]


def safe_raw_path(raw_target: bytes, limit: int = 256) -> str:
    """The path part of a target we could not canonicalize, made printable and short."""
    path = raw_target.split(b"?", 1)[0][:limit]
    return path.decode("ascii", "backslashreplace").encode("unicode_escape").decode("ascii")


def event(flow: Flow) -> dict[str, object]:
    """The audit line's fields as they are written: redacted wherever the line's bytes needed it
    (gateway/redact.py)."""
    return checked_line(_fields(flow), flow.secrets, encode_line)[1]


def _fields(flow: Flow) -> dict[str, object]:
    return {
        "time": _clock.now(),
        "request_id": flow.request_id,
        "client": flow.client,
        "sub": flow.subject,
        "issuer": flow.issuer,
        "credential_source": flow.credential_source,
        "token_label": flow.token_label,
        "config_generation": flow.generation,
        "key": flow.key,
        "rule": flow.rule,
        "method": flow.method,
        "path": flow.shown_path(),
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


class _Clock:
    """ISO 8601 UTC time with milliseconds. The seconds part is formatted once per second and the
    whole text once per millisecond: under load ten or more lines share one (0.6 → 0.2 µs a line)."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""
        self._milli = -1
        self._text = ""

    def now(self) -> str:
        milli = int(time.time() * 1000)
        if milli != self._milli:
            second = milli // 1000
            if second != self._second:
                self._second, self._prefix = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._milli, self._text = milli, f"{self._prefix}.{milli % 1000:03d}+00:00"
        return self._text


_clock = _Clock()
_ascii_json = json.JSONEncoder(separators=(",", ":")).encode  # one encoder for the process, not one per line


def encode_line(fields: dict[str, object]) -> bytes:
    """The audit line as compact JSON, always pure ASCII (whatever stdout's encoding, no line is lost).

    orjson takes ~0.4 µs where ``json`` took ~4.5 µs of every request (bench/README.md). orjson writes
    non-ASCII as UTF-8 and refuses lone surrogates and integers beyond 64 bits; a line with any of
    these (rare: a claim or a client name in another script) goes through ``json`` with
    ``ensure_ascii``, which escapes them. For ASCII lines both give the same bytes.
    """
    try:
        line = orjson.dumps(fields)
    except TypeError:  # orjson.JSONEncodeError: a lone surrogate, an int beyond 64 bits
        return _ascii_json(fields).encode("ascii")
    return line if line.isascii() else _ascii_json(fields).encode("ascii")


class _Writer:
    """Audit lines, batched: every line finished in one event-loop iteration goes out in one ``write``.

    Measured (bench/README.md): building the line through ``logging`` (a LogRecord, ``getpid``,
    ``findCaller``) plus a write and flush per request was 13 % of the gateway's CPU. Here a line is
    appended to a list and one flush is scheduled with ``call_soon``, so under load many lines share a
    syscall and at rest a line is written within the same loop iteration. Nothing is ever dropped: the
    write is a plain blocking write, so a log reader that stops reading slows the gateway down rather
    than losing security records; lines still pending at exit are written by ``atexit``.
    """

    def __init__(self) -> None:
        self.stream: IO[str] | None = None
        self._pending: list[bytes] = []
        self._scheduled = False

    def add(self, line: bytes) -> None:
        self._pending.append(line)
        if self._scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()  # no loop (CLI paths, unit tests): write at once
            return
        self._scheduled = True
        loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if not self._pending or self.stream is None:
            return
        text = b"\n".join(self._pending) + b"\n"
        self._pending.clear()
        self.stream.write(text.decode("ascii"))
        self.stream.flush()


_writer = _Writer()
atexit.register(_writer.flush)


def emit(flow: Flow) -> dict[str, object]:
    """Queue the request's audit line (written within this event-loop iteration), checked over its
    bytes by the one redactor; return its fields as written, for the request's trace."""
    line, fields = checked_line(_fields(flow), flow.secrets, encode_line)
    _writer.add(line)
    return fields


def configure(stream: IO[str] | None = None) -> None:
    """Send audit lines, bare, to stdout (or ``stream``); the platform's log shipper takes it from there."""
    _writer.flush()
    _writer.stream = stream or sys.stdout
