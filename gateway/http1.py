"""The gateway's HTTP/1.1 server: the client side of the wire, owned in one module (issue 9).

httptools (llhttp, strict) parses; this module decides everything else and calls an ASGI app (the
proxy pipeline, the admin's Starlette app) with a plain HTTP scope. It replaced a subclass of
uvicorn's private protocol class: that seam held the upgrade, trailer and pipelining holes, and
uvicorn's request cycle cost ~30 µs a request (two writes per answer, a regex per header).

What it guarantees, each with its own test (tests/e2e/test_connections.py, test_http1.py):

- The request-target is kept exactly as sent (``RAW_TARGET``); the head is refused while it is still
  being parsed when it outgrows its budget (``max_target_bytes``, ``max_header_bytes``,
  ``max_header_count``, and the bytes fed while the head is unfinished: llhttp buffers a whole header
  value before it is seen) or its deadline (``head_timeout``, 408).
- Every state of a connection has a deadline or a byte budget: the head, an idle keep-alive
  (``keep_alive_timeout``), the framing around a body (trailers and chunk extensions:
  :data:`MAX_TRAILER_BYTES`), a body nobody will read after an early answer (``linger``).
- A refusal made here is our JSON error with an audit line, and is never written into a response
  that is owed or streaming on the connection. Trailers are never merged into the checked headers.
- Pipelined requests run one at a time, in order, at most :data:`MAX_PIPELINED` waiting (one read
  can hold a thousand small heads); an upgrade is answered over HTTP/1.1 and closed.
- Backpressure both ways: reading pauses while :data:`HIGH_WATER` bytes of body wait for the app,
  and ``send`` waits while the client is not reading.
- A small answer is one write: the head is held until the first body bytes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import unquote

import httptools

from gateway import audit, metrics
from gateway.audit import Flow
from gateway.deadline import Deadline
from gateway.errors import FramingInvalid, GatewayError, HeadersTooLarge, RequestTimeout, TargetTooLong
from gateway.framing import parser_refusal
from gateway.outbox import outbox
from gateway.pipeline import RAW_TARGET, StreamAborted, new_request_id
from gateway.responses import error_response_bytes
from gateway.settings import Limits
from gateway.types import Message, Receive, Scope, Send

App = Callable[[Scope, Receive, Send], Awaitable[None]]

_DETACHED = httptools.HttpRequestParser(object())  # a lost connection's parser: never fed, holds nothing
MAX_TRAILER_BYTES = 8 * 1024  # bytes the parser may hold of a body's framing (trailers, extensions)
HIGH_WATER = 64 * 1024  # request body bytes waiting for the app before reading from the client pauses
MAX_PIPELINED = 64  # requests parsed and waiting behind the one being answered (apt pipelines 10)
_NO_BODY_STATUS = frozenset({204, 304})
_STATUS_LINES = {
    s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode("ascii")) for s in HTTPStatus if s.value >= 200
}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_ASGI = {"version": "3.0", "spec_version": "2.3"}

log = logging.getLogger("proget_gateway")


class Site:
    """What the connections of one listening port share: the app, the limits, the live set."""

    def __init__(self, app: App, limits: Limits, keep_alive_timeout: float, *, date_header: bool) -> None:
        self.app = app
        self.limits = limits
        self.head_budget = limits.max_target_bytes + limits.max_header_bytes + 1024  # + request line, CRLFs
        self.linger = min(limits.head_timeout, 2.0)
        self.keep_alive_timeout = keep_alive_timeout
        self.date_header = date_header
        self.connections: set[Connection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.closing = False
        self._date = (0, b"")

    def date(self) -> bytes:
        """A ``date`` header line, formatted once a second."""
        now = int(time.time())
        if self._date[0] != now:
            self._date = (now, b"date: %s\r\n" % formatdate(now, usegmt=True).encode("ascii"))
        return self._date[1]


class _HeadRefused(Exception):
    def __init__(self, error: GatewayError) -> None:
        self.error = error


class Exchange:
    """One request and its answer: the ASGI ``receive``/``send`` pair of one app call."""

    __slots__ = (
        "body",
        "chunked",
        "conn",
        "disconnected",
        "event",
        "keep_alive",
        "more_body",
        "no_body",
        "pending",
        "remaining",
        "response_complete",
        "response_started",
        "scope",
        "size",
        "waiting_100",
    )

    def __init__(self, conn: Connection, scope: Scope, keep_alive: bool, expect_100: bool) -> None:
        self.conn, self.scope = conn, scope
        self.keep_alive = keep_alive
        self.waiting_100 = expect_100
        self.body: list[bytes] = []
        self.size = 0  # bytes in ``body``
        self.more_body = True
        self.event = asyncio.Event()
        self.disconnected = False
        self.response_started = False
        self.response_complete = False
        self.no_body = scope["method"] == "HEAD"
        self.chunked = False
        self.remaining = 0
        self.pending: bytes | None = None  # the response head, written with the first body bytes

    async def run(self) -> None:
        """Call the app; whatever it leaves unfinished closes the connection (never a short answer)."""
        try:
            await self.conn.site.app(self.scope, self.receive, self.send)
        except asyncio.CancelledError:
            self.conn.close()  # shutdown.timeout passed: the pipeline audited shutdown_aborted
        except StreamAborted:
            self.conn.close()  # a deliberate mid-stream abort, already audited
        except Exception as exc:
            log.error("unexpected error serving a request", exc_info=exc)  # redacted by the pipeline
            self._fail_answer()
        else:
            if not self.response_complete and not self.disconnected:
                self._fail_answer()
        finally:
            if self.conn.lost:  # nothing runs on this connection any more: let it and its exchanges go
                self.conn.forget_exchanges()

    def _fail_answer(self) -> None:
        if self.response_started or self.disconnected:
            self.conn.close()
            return
        self.conn.write(
            b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        )
        self.conn.close()

    async def receive(self) -> Message:
        conn = self.conn
        if self.waiting_100:
            self.waiting_100 = False
            if not self.response_started:
                conn.write(_CONTINUE)
        if not self.disconnected and not self.response_complete:
            conn.resume_reading()
            await self.event.wait()
            self.event.clear()
        if self.disconnected or self.response_complete:
            return {"type": "http.disconnect"}
        body = self.body
        data = body[0] if len(body) == 1 else b"".join(body)
        self.body, self.size = [], 0
        return {"type": "http.request", "body": data, "more_body": self.more_body}

    async def send(self, message: Message) -> None:
        conn = self.conn
        if conn.write_paused and not self.disconnected:
            await conn.drain()
        if self.disconnected:
            return
        if not self.response_started:
            if message["type"] != "http.response.start":
                raise RuntimeError(f"expected http.response.start, got {message['type']}")
            self.pending = self._head(message["status"], message.get("headers", ()))
            self.response_started = True
            self.waiting_100 = False
            return
        if self.response_complete or message["type"] != "http.response.body":
            raise RuntimeError(f"unexpected {message['type']} after the response")
        self._write_body(message.get("body", b""), message.get("more_body", False))

    def _head(self, status: int, headers: Any) -> bytes:
        """The status line and headers; refuses a header that would not frame as one line."""
        lines = [_STATUS_LINES.get(status) or b"HTTP/1.1 %d Status\r\n" % status]
        if status in _NO_BODY_STATUS:
            self.no_body = True  # a 304's Content-Length describes the entity, not this answer
        framed = False
        for name, value in headers:
            lowered = name.lower()
            if lowered == b"content-length" and not framed:
                self.remaining, framed = int(value), True
            elif lowered == b"transfer-encoding" and value.lower() == b"chunked":
                self.chunked, framed = True, True
            elif lowered == b"connection" and b"close" in [t.strip().lower() for t in value.split(b",")]:
                self.keep_alive = False
            lines.append(b"%s: %s\r\n" % (name, value))
        if not self.keep_alive:
            lines.append(b"connection: close\r\n")
        if not framed and not self.no_body and status not in _NO_BODY_STATUS:
            self.chunked = True
            lines.append(b"transfer-encoding: chunked\r\n")
        if self.conn.site.date_header:
            lines.append(self.conn.site.date())
        lines.append(b"\r\n")
        head = b"".join(lines)
        if head.count(b"\n") != len(lines) or head.count(b"\r") != len(lines) or b"\0" in head:
            raise RuntimeError("a response header would not frame as one line")
        return head

    def _write_body(self, body: bytes | memoryview, more: bool) -> None:
        data: bytes | memoryview
        if self.no_body:
            data = b""
            self.remaining = 0
        elif self.chunked:
            data = b"".join((b"%x\r\n" % len(body), body, b"\r\n")) if body else b""
            if not more:
                data += b"0\r\n\r\n"
        else:
            if len(body) > self.remaining:
                raise RuntimeError("response body longer than its Content-Length")
            self.remaining -= len(body)
            data = body
        pending, self.pending = self.pending, None
        if pending is not None:
            self.conn.write(pending + data if len(data) < 65536 else pending)
            if len(data) >= 65536:
                self.conn.write(data)
        elif data:
            self.conn.write(data)
        if more:
            return
        if self.remaining:
            raise RuntimeError("response body shorter than its Content-Length")
        self.response_complete = True
        self.event.set()
        if not self.keep_alive:
            self.conn.close()
        self.conn.response_complete(self)


class Connection(asyncio.Protocol):
    """One client connection: parses requests, runs them in order, enforces every budget."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.loop = asyncio.get_running_loop()
        self.outbox = outbox(self.loop)  # writes leave at the end of the loop's turn (gateway/outbox.py)
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.peer: tuple[str, int] | None = None
        self.server: tuple[str, int] | None = None
        self.reading: Exchange | None = None  # the newest request: the one whose body is being parsed
        self.serving: Exchange | None = None  # the oldest unfinished one: the one the app is answering
        self.pipeline: deque[Exchange] = deque()
        self.lost = False  # the transport is gone (connection_lost)
        self.parsing = True  # False once this connection will read no more requests
        self.head_done = False
        self.head_fed = 0
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.header_bytes = 0
        self.expect_100 = False
        self.progress = False
        self.stalled = 0
        self.clock = Deadline(self.loop)  # the head's deadline, or the idle keep-alive's
        self.head_clock = False  # the clock runs for a head (head_timeout)
        self.idle = False  # the clock runs for an idle keep-alive (keep_alive_timeout)
        self.write_paused = False
        self.reading_paused = False
        self._drained: asyncio.Future[None] | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.peer = _address(transport.get_extra_info("peername"))
        self.server = _address(transport.get_extra_info("sockname"))
        self.site.connections.add(self)
        self._start_head_clock()

    def connection_lost(self, exc: Exception | None) -> None:
        self.site.connections.discard(self)
        self.parsing = False
        self.lost = True
        # The parser holds this protocol's callbacks, and the exchanges point back at this connection:
        # cycles the garbage collector, which runs rarely (gateway/app.py), would free long after, with
        # any request body still held. Both are let go once no exchange runs any more.
        self.parser = _DETACHED
        self.clock.cancel()
        self.head_clock = self.idle = False
        for exchange in (self.serving, *self.pipeline):
            if exchange is not None:
                exchange.disconnected = True
                exchange.event.set()
        self._wake_writer()
        if self.serving is None:
            self.forget_exchanges()

    def forget_exchanges(self) -> None:
        """The connection is lost and no exchange runs: drop every reference to them."""
        self.serving = self.reading = None
        self.pipeline.clear()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake_writer()

    def data_received(self, data: bytes) -> None:
        if not self.parsing:
            return  # lingering or refused: read and dropped, never parsed nor held
        if self.idle:  # the first bytes after an idle keep-alive: a head is coming
            self._start_head_clock()
        if not self.head_done:  # a head spread over more reads than its budget allows
            if self.head_fed > self.site.head_budget:
                self.refuse(HeadersTooLarge())
                return
            self.head_fed += len(data)
        self.progress = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            self.refuse(cause.error if isinstance(cause, _HeadRefused) else FramingInvalid())
        except httptools.HttpParserUpgrade:
            self.parsing = False  # only an h2c offer gets here; answered over HTTP/1.1, then closed
        except httptools.HttpParserError:
            self.refuse(FramingInvalid())
        else:
            self._count_stall(len(data))

    # -- httptools callbacks ------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.url, self.headers, self.header_bytes, self.expect_100 = b"", [], 0, False
        self.head_done = False
        if not self.head_clock:
            self._start_head_clock()

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self.site.limits.max_target_bytes:
            raise _HeadRefused(TargetTooLong())

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.head_done:
            return  # a trailer: never merged into the headers the gateway checked, never forwarded
        limits = self.site.limits
        self.header_bytes += len(name) + len(value) + 4
        if len(self.headers) >= limits.max_header_count or self.header_bytes > limits.max_header_bytes:
            raise _HeadRefused(HeadersTooLarge())
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100 = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.head_done = True
        self._moved()
        self._stop_head_clock()
        parser = self.parser
        upgrading = parser.should_upgrade()
        version = parser.get_http_version()
        error = parser_refusal(version, self.headers, upgrading)
        if error is not None:
            raise _HeadRefused(error)
        url = self.url
        raw_path, _, query = url.partition(b"?")
        path = raw_path.decode("latin-1")
        scope = {
            "type": "http",
            "asgi": _ASGI,
            "http_version": version,
            "server": self.server,
            "client": self.peer,
            "scheme": "http",
            "method": parser.get_method().decode("ascii"),
            "root_path": "",
            "path": unquote(path) if "%" in path else path,
            "raw_path": raw_path,
            "query_string": query,
            "headers": self.headers,
            RAW_TARGET: url,
        }
        # A refusal never reads the body the client is holding back; a client that then reuses the
        # connection would have its next request read as that body. And curl (cargo, apt's https
        # helpers) offers h2c on cleartext: a server may ignore an Upgrade (RFC 9110 7.8), so it is
        # answered over HTTP/1.1, but the parser stops at it. Close after answering either.
        keep_alive = (
            version != "1.0"
            and parser.should_keep_alive()
            and not (self.expect_100 or upgrading or self.site.closing)
        )
        if len(self.pipeline) >= MAX_PIPELINED:  # each waiting request holds its head in memory
            raise _HeadRefused(FramingInvalid(f"More than {MAX_PIPELINED} pipelined requests."))
        exchange = Exchange(self, scope, keep_alive, self.expect_100)
        self.reading = exchange
        if self.serving is None:
            self._start(exchange)
        else:
            self.pause_reading()
            self.pipeline.append(exchange)

    def on_chunk_header(self) -> None:
        self._moved()

    def on_body(self, body: bytes) -> None:
        self._moved()
        exchange = self.reading
        if exchange is None or exchange.response_complete:
            return
        exchange.body.append(body)
        exchange.size += len(body)
        if exchange.size > HIGH_WATER:
            self.pause_reading()
        exchange.event.set()

    def on_message_complete(self) -> None:
        self._moved()
        exchange = self.reading
        if exchange is None or exchange.response_complete:
            return
        exchange.more_body = False
        exchange.event.set()

    # -- running requests ---------------------------------------------------------------------------

    def _start(self, exchange: Exchange) -> None:
        self.serving = exchange
        task = self.loop.create_task(exchange.run())
        self.site.tasks.add(task)
        task.add_done_callback(self.site.tasks.discard)

    def response_complete(self, exchange: Exchange) -> None:
        """The answer to ``exchange`` is written: the next pipelined request, or an idle connection."""
        self.serving = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if not self.parsing and not self.pipeline:
            self.close()  # refused while answers were owed: close once the last is done
            return
        if not self.pipeline and exchange.more_body:
            self._linger()  # answered before the request's body was read
            return
        self.resume_reading()
        if self.pipeline:
            self._start(self.pipeline.popleft())
        else:
            self.head_done = False  # between requests: what comes next is a head, on its clock
            self.idle = True
            self.clock.set(self.site.keep_alive_timeout, self.close)

    def _linger(self) -> None:
        """Answered before the body was read (an early 401, say): the rest of the body is never
        parsed or held. The client gets our answer and a FIN, then ``linger`` seconds to stop
        sending before the connection is dropped (closing at once could reset the answer away)."""
        self.parsing = False
        transport = self.transport
        assert transport is not None
        self.outbox.flush()  # our answer goes out before the FIN
        if transport.can_write_eof():
            transport.write_eof()
        self.loop.call_later(self.site.linger, transport.close)

    def shutdown(self) -> None:
        """Graceful shutdown: an idle connection closes now, a busy one after its answer."""
        if self.serving is None:
            self.close()
            return
        self.serving.keep_alive = False
        for exchange in self.pipeline:
            exchange.keep_alive = False

    def refuse(self, error: GatewayError) -> None:
        """Refuse what the parser saw; this connection reads no more requests.

        With no response owed, the refusal is written and the connection closed. Otherwise nothing
        is written (it would land inside a response): if the running request's own body broke, the
        connection is closed and the app sees the client gone (its audit line records it); else the
        request being refused is a pipelined one, audited here; the requests parsed before it are
        still answered, in order, and the connection closes after the last of them.
        """
        self.parsing = False
        self._stop_head_clock()
        running = self.serving is not None or bool(self.pipeline)
        reading = self.reading
        if running and not self.pipeline and self.head_done and reading is not None and reading.more_body:
            self.close()
            return
        last = self.pipeline[-1] if self.pipeline else self.serving
        if last is not None:
            last.keep_alive = False  # the requests already parsed are answered; the last says close
        flow = Flow(request_id=new_request_id(), method="-", peer=self.peer[0] if self.peer else "-")
        flow.fail(error)
        audit.emit(flow)
        metrics.observe(flow)
        if not running:
            self.write(error_response_bytes(error, flow.request_id))
            self.close()

    # -- clocks and budgets -------------------------------------------------------------------------

    def _start_head_clock(self) -> None:
        self.head_fed = 0
        self.head_clock, self.idle = True, False
        self.clock.set(self.site.limits.head_timeout, self._head_too_slow)

    def _stop_head_clock(self) -> None:
        if self.head_clock:
            self.head_clock = False
            self.clock.clear()

    def _head_too_slow(self) -> None:
        self.head_clock = False
        if not self.head_done:
            self.refuse(RequestTimeout("The request head did not arrive in time."))

    def _moved(self) -> None:
        self.progress = True
        self.stalled = 0

    def _count_stall(self, size: int) -> None:
        """A read inside a body that moved nothing forward is framing the parser may be holding:
        trailers are buffered whole by httptools, so past the budget the connection is refused.
        (The read on which trailers begin is not counted: the bound is the budget plus one read.)"""
        if self.head_done and not self.progress:
            self.stalled += size
            if self.stalled > MAX_TRAILER_BYTES:
                self.refuse(HeadersTooLarge(f"Trailers larger than {MAX_TRAILER_BYTES} bytes."))

    # -- the transport ------------------------------------------------------------------------------

    def write(self, data: bytes | memoryview) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            self.outbox.write(transport, data)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.outbox.flush()  # what was written goes out before the FIN
            self.transport.close()

    def pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()

    async def drain(self) -> None:
        if self._drained is None:
            self._drained = self.loop.create_future()
        await self._drained

    def _wake_writer(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)


def _address(info: Any) -> tuple[str, int] | None:
    return (str(info[0]), int(info[1])) if isinstance(info, tuple) and len(info) >= 2 else None


class Server:
    """One listening port served by :class:`Connection`; stops gracefully within a timeout."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self._server: asyncio.AbstractServer | None = None
        self._stop = asyncio.Event()
        self._timeout = 0.0
        self.force = False

    async def serve(self, sock: Any) -> None:
        """Accept on ``sock`` until :meth:`stop`, then drain (see :meth:`stop`)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: Connection(self.site), sock=sock, backlog=2048)
        await self._stop.wait()
        await self._shutdown()

    def stop(self, timeout: float) -> None:
        """Stop accepting; in-flight requests get ``timeout`` seconds, then are cancelled."""
        self._timeout = timeout
        self._stop.set()

    @property
    def in_flight(self) -> int:
        return len(self.site.tasks)

    async def _shutdown(self) -> None:
        site = self.site
        site.closing = True
        if self._server is not None:
            self._server.close()
        for conn in list(site.connections):
            conn.shutdown()
        deadline = asyncio.get_running_loop().time() + self._timeout
        while (site.connections or site.tasks) and not self.force:
            if asyncio.get_running_loop().time() >= deadline:
                break
            await asyncio.sleep(0.05)
        if site.tasks:
            log.warning("shutdown: cancelling %d request(s) still running", len(site.tasks))
            tasks = list(site.tasks)
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks, timeout=5)  # their audit lines are written as they unwind
        for conn in list(site.connections):
            conn.close()
