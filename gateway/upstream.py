"""Send the rewritten request to ProGet and stream the answer: our own HTTP/1.1 client.

Why our own (issue 9, figures in bench/README.md): aiohttp's request path was the largest single cost
of a gateway request (~85 µs of ~330), and its C parser hid a malformed chunk from the reader until
a timer noticed the closed connection. This module owns the ProGet side of the wire in one place:

- :class:`UpstreamRequest` is serialized once (:func:`encode_head`) when the rewrite builds it, the
  egress guard scans those bytes, and the client writes those bytes: what was checked is what is sent.
  A header that would change the framing (CR, LF, NUL) cannot be serialized.
- The client only ever connects to the configured origin; a request carries a target, never a URL.
- Answers are parsed by httptools (llhttp, strict): a malformed or truncated body fails the read at
  once. The head is capped at :data:`MAX_HEAD` bytes before the parser buffers it. Once a head has
  declared the body's length, the rest of the body is counted instead (it has no framing inside it,
  only an end) and goes on as views of the buffers it was read into, without a copy
  (:mod:`gateway.buffers`); a byte after the declared end is never body and keeps the connection
  out of the pool.
- Timeouts are ours: ``connect`` per new connection, ``write`` per chunk ProGet must accept,
  ``read`` from the end of the request body to the answer's head and between two chunks of its body.
- Backpressure both ways: reading from ProGet pauses while :data:`HIGH_WATER` bytes of memory wait
  for the client (a view counts its whole buffer), and an upload waits for ProGet to take each chunk.
- Keep-alive pool, most recently used first; a pooled connection ProGet closed while idle is
  noticed when taken, and an idempotent request whose reused connection closed before any byte of an
  answer is sent once more on a new one (RFC 9110 9.2.2), never a streamed body.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any, NamedTuple, cast
from urllib.parse import urlsplit

import httptools

from gateway.buffers import SIZE as READ_SIZE
from gateway.buffers import buffers, held, piece
from gateway.deadline import Deadline
from gateway.errors import (
    GatewayError,
    HeaderInvalid,
    UpstreamAborted,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from gateway.outbox import outbox
from gateway.settings import UpstreamSettings

HIGH_WATER = READ_SIZE  # memory held for a slow client before reading from ProGet pauses
MAX_HEAD = 256 * 1024  # bytes of ProGet's answer head (status line and headers), any 1xx included
KEEP_IDLE = 15.0  # seconds an idle pooled connection is kept (ProGet's IIS/Kestrel keep theirs 120 s)
_REPLAYABLE = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})  # idempotent (RFC 9110)
_NO_BODY_STATUS = frozenset({204, 304})
SAY_WHY_EVERY = 10.0  # seconds between two log lines saying why ProGet cannot be reached

log = logging.getLogger("proget_gateway")


class _RequestFields(NamedTuple):
    method: str
    target: str  # canonical path + stripped query, as sent on the request line
    headers: list[tuple[str, str]]
    body: bytes | None  # the rewritten body; None means "stream the client's body"
    chunked: bool  # the streamed body has no declared length: send it chunked
    head: bytes  # the serialized request line and headers: exactly what is sent


class UpstreamRequest(_RequestFields):
    """Exactly what ProGet will receive: ``head`` is serialized (and checked) when the request is built."""

    __slots__ = ()

    def __new__(
        cls,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes | None,
        chunked: bool = False,
    ) -> UpstreamRequest:
        return super().__new__(
            cls, method, target, headers, body, chunked, encode_head(method, target, headers)
        )

    def __repr__(self) -> str:
        """Names no header value and no body: the headers hold the key."""
        return f"UpstreamRequest({self.method} {self.target!r}, {len(self.headers)} headers)"


def encode_head(method: str, target: str, headers: list[tuple[str, str]]) -> bytes:
    """The request head as bytes; refuses anything that would not frame as exactly these lines.

    The check is over the text actually sent: it must hold exactly one CRLF per line and no other CR
    or LF, no NUL, and a request line of three parts with an origin-form target, so no value can
    start a header or a request, and no target can name another host.
    """
    lines = [f"{method} {target} HTTP/1.1", *[f"{name}: {value}" for name, value in headers]]
    text = "\r\n".join(lines) + "\r\n\r\n"
    breaks = len(lines) + 1
    if (
        text.count("\n") != breaks
        or text.count("\r") != breaks
        or "\0" in text
        or " " in method
        or not target.startswith("/")  # origin-form only: no absolute URL can name another host
        or " " in target
        or "\t" in target
    ):
        raise HeaderInvalid("The request cannot be framed for ProGet as received.")
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        raise HeaderInvalid("The request cannot be framed for ProGet as received.") from None


class _Extra(Exception):
    """ProGet sent bytes after its answer ended: the connection is not reused."""


class _Connection(asyncio.BufferedProtocol):
    """One connection to ProGet, one exchange at a time; httptools parses each answer."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.outbox = outbox(loop)  # writes leave at the end of the loop's turn (gateway/outbox.py)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser: httptools.HttpResponseParser | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None
        self.clock = Deadline(loop)  # ProGet's silence while we wait (``wait``): gateway/deadline.py
        self._start(False)

    def _start(self, no_body: bool) -> None:
        """Reset for a new exchange (``no_body``: the request was HEAD)."""
        self.no_body = no_body
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.content_length: int | None = None
        self.head_done = False
        self.head_bytes = 0  # bytes received before the head was parsed
        self.header_bytes = 0  # bytes of header lines, 1xx answers included
        self.interim = False
        self.body: deque[bytes | memoryview] = deque()
        self.buffered = 0
        self.complete = False
        self.keep_alive = False
        self.error: GatewayError | None = None
        self.received = False
        self.reading_paused = False
        self.until_close = False
        self.seen = 0  # body bytes the parser passed on
        self.counted = False  # the body is counted rather than parsed (from the read after its head)
        self.remaining = 0  # body bytes still to come while they are counted
        self.reading: memoryview | None = None  # the body buffer handed to the transport's next read

    # -- asyncio.Protocol --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def get_buffer(self, sizehint: int) -> memoryview:
        """Where the next read goes: a body buffer while a body is counted, else the scratch."""
        if self.remaining:
            self.reading = buffers.body()
            return self.reading
        return buffers.scratch

    def buffer_updated(self, nbytes: int) -> None:
        if self.remaining:
            self._counted(nbytes)
            return
        self.data_received(buffers.scratch[:nbytes])
        self._count_the_rest()

    def _count_the_rest(self) -> None:
        """Once a head has declared the body's length, count what is left of it instead of parsing
        it, so its bytes go on as they were read (gateway/buffers.py). Nothing is lost by leaving
        llhttp here: a body of declared length has no framing inside it, only an end."""
        parser = self._parser
        if (
            self.head_done
            and not self.complete
            and self.error is None
            and self.content_length is not None
            and parser is not None
        ):
            self.keep_alive = parser.should_keep_alive()
            self.remaining = self.content_length - self.seen
            self.counted = True

    def _counted(self, nbytes: int) -> None:
        view, self.reading = self.reading, None
        if view is None or self._parser is None:  # bytes nobody asked for
            self.abort()
            return
        self.received = True
        if nbytes >= self.remaining:
            if nbytes > self.remaining:
                self.keep_alive = False  # bytes after the answer's end: the connection is not reused
            nbytes, self.remaining, self.complete = self.remaining, 0, True
            self._parser = None  # it saw none of this body: any later byte is one nobody asked for
        else:
            self.remaining -= nbytes
        part = piece(view, nbytes)
        self.body.append(part)
        self.buffered += held(part)
        self._hold_back()
        self.wake()

    def _hold_back(self) -> None:
        """Stop reading from ProGet while more than HIGH_WATER bytes of memory wait for the client."""
        if self.buffered > HIGH_WATER and not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def data_received(self, data: bytes | memoryview) -> None:
        parser = self._parser
        if parser is None:  # bytes nobody asked for, on an idle connection
            self.abort()
            return
        self.received = True
        if not self.head_done:
            self.head_bytes += len(data)
            if self.head_bytes > 2 * MAX_HEAD:  # what llhttp may buffer is bounded before it parses
                self.fail(UpstreamError("ProGet's answer head is too large."))
                return
        try:
            parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _Extra) or self.complete:
                self.keep_alive = False
            else:
                self.fail(self._broken(exc.__context__))
        except httptools.HttpParserError:
            self.fail(self._broken(None))

    def _broken(self, cause: BaseException | None) -> GatewayError:
        if isinstance(cause, GatewayError):
            return cause
        return UpstreamAborted() if self.head_done else UpstreamError("ProGet's answer could not be read.")

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._parser is not None and not self.complete:
            if self.head_done and self.until_close and exc is None and self.error is None:
                self.complete = True  # a close-delimited body ends here (unless the exchange had failed)
            elif not self.head_done:
                self.fail(UpstreamUnreachable())
            else:
                self.fail(UpstreamAborted())
        self._parser = None  # it holds this protocol's callbacks: no cycle outlives the connection
        self.clock.cancel()  # nor a timer of the loop
        self.wake()
        self._wake_writer()

    def pause_writing(self) -> None:
        self._writable = self.loop.create_future()

    def resume_writing(self) -> None:
        self._wake_writer()

    # -- httptools callbacks ------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:
            raise _Extra()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value) + 4
        if self.header_bytes > MAX_HEAD:
            raise UpstreamError("ProGet's answer head is too large.")
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self._parser
        assert parser is not None
        status = parser.get_status_code()
        if status == 101:
            raise UpstreamError("ProGet switched protocols, which the gateway never asks for.")
        if status < 200:  # 100 Continue, 103 Early Hints: not the answer
            self.interim, self.headers = True, []  # header_bytes keeps counting: 1xx heads are capped too
            return
        self.status, self.head_done = status, True
        self.content_length, close_delimited = _framing(self.headers)
        self.until_close = not self.no_body and status not in _NO_BODY_STATUS and close_delimited
        if self.no_body:
            self.complete, self.keep_alive = True, parser.should_keep_alive()
        self.wake()

    def on_body(self, body: bytes) -> None:
        if self.no_body:
            raise _Extra()
        self.body.append(body)
        self.seen += len(body)
        self.buffered += len(body)
        self._hold_back()
        self.wake()

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        if self.complete:
            return
        parser = self._parser
        self.complete = True
        self.keep_alive = parser is not None and parser.should_keep_alive()
        self.wake()

    # -- the exchange -------------------------------------------------------------------------------

    def begin(self, no_body: bool) -> None:
        self._start(no_body)
        self._parser = httptools.HttpResponseParser(self)

    def fail(self, error: GatewayError) -> None:
        """End the exchange with ``error`` (a broken answer, or an upload that could not be sent)."""
        if self.error is None and not self.complete:
            self.error = error
        self.abort()
        self.wake()

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake_writer(self) -> None:
        writable, self._writable = self._writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    async def wait(self, within: float | None) -> None:
        """Until something happens on this exchange; UpstreamTimeout after ``within`` seconds of nothing."""
        waiter = self._waiter = self.loop.create_future()
        if within is not None:
            self.clock.set(within, self._silent_too_long)
        try:
            await waiter
        finally:
            self._waiter = None
            if within is not None:
                self.clock.clear()

    def _silent_too_long(self) -> None:
        if self._waiter is not None:
            _expire(self._waiter)

    async def drain(self, within: float) -> None:
        """Until ProGet has taken what was written; UpstreamTimeout if it takes none for ``within`` s."""
        writable = self._writable
        if writable is None:
            return
        timer = self.loop.call_later(within, _expire, writable)
        try:
            await writable
        finally:
            timer.cancel()
        if self.closed:
            raise self.error or UpstreamAborted()

    def take_body(self) -> bytes:
        """All of the body that has arrived, as one ``bytes`` (a small body, read whole)."""
        body = self.body
        data = body[0] if len(body) == 1 and type(body[0]) is bytes else b"".join(body)
        self._taken()
        return data

    def take_pieces(self) -> list[bytes | memoryview]:
        """What has arrived, to relay: a counted body's pieces one by one (joining the views would
        copy them), else what httptools passed on joined into one (one send for many small chunks)."""
        if not self.counted:
            return [self.take_body()]
        pieces = list(self.body)
        self._taken()
        return pieces

    def _taken(self) -> None:
        self.body.clear()
        self.buffered = 0
        if self.reading_paused and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()

    def write(self, data: bytes) -> None:
        if self.transport is None or self.closed:
            raise self.error or (UpstreamAborted() if self.head_done else UpstreamUnreachable())
        self.outbox.write(self.transport, data)

    def reusable(self) -> bool:
        return self.complete and self.keep_alive and self.error is None and not self.closed

    def finish(self) -> None:
        """The exchange is over: the connection is idle now (the pool decides whether it is kept)."""
        self._parser = None
        self.idle_since = self.loop.time()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


def _fresh(conn: _Connection) -> bool:
    return not conn.closed and conn.idle_since > conn.loop.time() - KEEP_IDLE


def _expire(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_exception(UpstreamTimeout())


def _framing(headers: list[tuple[bytes, bytes]]) -> tuple[int | None, bool]:
    """Read once per answer: the declared length (only when exactly one valid Content-Length and no
    Transfer-Encoding), and whether the body runs until ProGet closes (neither header, RFC 9112 6.3)."""
    lengths: list[bytes] = []
    chunked = False
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"content-length":
            lengths.append(value)
        elif lowered == b"transfer-encoding":
            chunked = True
    if len(lengths) != 1 or chunked or not lengths[0].strip().isdigit():
        return None, not lengths and not chunked
    return int(lengths[0]), False


class UpstreamResponse:
    """ProGet's answer: status and headers as received, the body read whole or as it arrives."""

    __slots__ = ("_client", "_conn", "_writer", "content_length", "headers", "read_timeout", "status")

    def __init__(
        self, client: UpstreamClient, conn: _Connection, writer: asyncio.Task[None] | None, read: float
    ) -> None:
        self._client, self._conn, self._writer = client, conn, writer
        self.status = conn.status
        self.headers = conn.headers
        self.content_length = conn.content_length  # None: chunked, close-delimited or not one valid value
        self.read_timeout = read

    async def read_small(self) -> bytes:
        """Read a body already known to be small (Content-Length under the streaming threshold)."""
        conn = self._conn
        while not conn.complete:
            if conn.error is not None:
                raise conn.error
            await conn.wait(self.read_timeout)
        return conn.take_body()

    async def chunks(self) -> AsyncIterator[bytes | memoryview]:
        """The body as it arrives; a failure midway raises UpstreamAborted (or the upload's own error)."""
        conn = self._conn
        while True:
            if conn.body:
                for part in conn.take_pieces():
                    yield part
            elif conn.complete:
                return
            elif conn.error is not None:
                raise conn.error
            else:
                try:
                    await conn.wait(self.read_timeout)
                except UpstreamTimeout:
                    raise UpstreamAborted() from None

    def close(self) -> None:
        """Give the connection back when the exchange is whole, drop it otherwise (cancels ProGet's side)."""
        writer = self._writer
        if writer is not None and not writer.done():
            writer.cancel()
            self._conn.abort()
        self._client.release(self._conn)


async def _send_body(
    conn: _Connection, body: AsyncIterable[bytes], chunked: bool, write_timeout: float
) -> None:
    """Relay the client's body; each chunk must be taken by ProGet within ``write_timeout`` seconds.

    Waiting for the client's next chunk is not ProGet's time, so that wait has no clock here (the
    server side bounds it). Any failure ends the exchange with that error, never a short upload.
    """
    try:
        async for chunk in body:
            if not chunk:
                continue  # an empty chunk would read as the chunked body's end
            conn.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
            await conn.drain(write_timeout)
        if chunked:
            conn.write(b"0\r\n\r\n")
    except GatewayError as exc:
        conn.fail(exc)
        raise
    except Exception:
        conn.fail(UpstreamAborted())
        raise
    finally:
        conn.wake()


def _on_writer_done(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: the error already reached the exchange through fail()


class UpstreamClient:
    """Pooled HTTP/1.1 connections to the configured origin, for the life of the process."""

    def __init__(self, settings: UpstreamSettings) -> None:
        self._settings = settings
        parts = urlsplit(settings.url)
        self._tls = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._tls else 80)
        self._ssl: ssl.SSLContext | None = None
        self._idle: deque[_Connection] = deque()  # most recently used on the right
        self._open: set[_Connection] = set()
        self._said = -SAY_WHY_EVERY

    async def start(self) -> None:
        if self._tls:
            tls = self._settings.tls
            context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
            if not tls.verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self._ssl = context

    async def close(self) -> None:
        for conn in [*self._idle, *self._open]:
            conn.abort()
        self._idle.clear()
        self._open.clear()

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._settings.timeouts.connect):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop),
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl else None,
                )
        except TimeoutError:
            self._say_why("no connection within timeouts.connect")
            raise UpstreamTimeout() from None
        except OSError as exc:  # refused, unreachable, DNS (gaierror) and TLS (SSLError) failures
            self._say_why(getattr(exc, "reason", None) or exc.strerror or type(exc).__name__)
            raise UpstreamUnreachable() from None
        return conn

    def _say_why(self, reason: str) -> None:
        """Tell the operator why ProGet cannot be reached (the client only sees upstream_unreachable),
        at most once every :data:`SAY_WHY_EVERY` seconds. The reason names no request and no secret."""
        now = time.monotonic()
        if now - self._said >= SAY_WHY_EVERY:
            self._said = now
            log.warning("upstream %s:%d cannot be reached: %s", self._host, self._port, reason)

    def _take(self) -> _Connection | None:
        """The most recently used idle connection still open and fresh, if any."""
        idle = self._idle
        while idle:
            conn = idle.pop()
            if _fresh(conn):
                return conn
            conn.abort()
        return None

    def release(self, conn: _Connection) -> None:
        """Pool the connection if the exchange ended cleanly; drop the stale ones at the pool's old end
        (after a burst, the connections it opened would otherwise stay listed until taken)."""
        self._open.discard(conn)
        reusable = conn.reusable()
        conn.finish()
        if not reusable:
            conn.abort()
            return
        idle = self._idle
        idle.append(conn)
        while not _fresh(idle[0]):
            idle.popleft().abort()

    async def open(self, request: UpstreamRequest, body: AsyncIterable[bytes] | None) -> UpstreamResponse:
        """Send the request (streaming ``body`` when the request carries no rewritten body)."""
        conn = self._take()
        if conn is None:
            return await self._exchange(await self._connect(), request, body)
        try:
            return await self._exchange(conn, request, body)
        except UpstreamUnreachable:
            if (
                conn.received
                or request.method not in _REPLAYABLE
                or (request.body is None and body is not None)
            ):
                raise
            return await self._exchange(await self._connect(), request, body)  # ProGet closed it idle

    async def _exchange(
        self, conn: _Connection, request: UpstreamRequest, body: AsyncIterable[bytes] | None
    ) -> UpstreamResponse:
        conn.begin(request.method == "HEAD")
        self._open.add(conn)
        timeouts = self._settings.timeouts
        writer: asyncio.Task[None] | None = None
        try:
            if request.body is not None or body is None:
                conn.write(request.head + request.body if request.body else request.head)
            else:
                conn.write(request.head)
                writer = conn.loop.create_task(_send_body(conn, body, request.chunked, timeouts.write))
                writer.add_done_callback(_on_writer_done)
            while not conn.head_done:
                if conn.error is not None:
                    raise conn.error
                sending = writer is not None and not writer.done()
                await conn.wait(None if sending else timeouts.read)
        except BaseException:
            if writer is not None:
                writer.cancel()
            self._open.discard(conn)
            conn.abort()
            raise
        return UpstreamResponse(self, conn, writer, timeouts.read)

    async def health(self, limit: float = 2.0) -> tuple[bool, Any]:
        """Does ProGet answer HTTP at all (any status: readiness), and its /health/json document (None if
        not JSON). A 500 from a stopped ProGet component must not drain the gateway (upstream_health.py)."""
        host = urlsplit(self._settings.url).netloc
        request = UpstreamRequest(
            "GET", "/health/json", [("host", host), ("accept", "application/json")], None
        )
        response: UpstreamResponse | None = None
        try:
            async with asyncio.timeout(limit):
                response = await self.open(request, None)
                document = await response.read_small()
        except (GatewayError, TimeoutError):
            return False, None
        finally:
            if response is not None:
                response.close()
        try:
            return True, json.loads(document)
        except ValueError:
            return True, None
