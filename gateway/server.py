"""Run the proxy and admin apps on uvicorn (httptools + uvloop), in one process and one event loop.

The proxy port uses a subclass of uvicorn's httptools protocol for three things the ASGI scope cannot
express: the request-target exactly as sent (uvicorn drops the scheme and host of an absolute-form
target), limits enforced while the head is still being parsed (a 100 MB header block is refused
before it is held), and the parser's own refusals rendered as our JSON error with an audit line
instead of uvicorn's plain-text 400.
"""

from __future__ import annotations

import asyncio
import logging
import math
import signal
import socket
from pathlib import Path
from typing import Any

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway import __version__, audit, metrics
from gateway.app import ProxyApp, admin_app
from gateway.audit import Flow
from gateway.errors import FramingInvalid, GatewayError, HeadersTooLarge, RequestTimeout, TargetTooLong
from gateway.framing import parser_refusal
from gateway.pipeline import RAW_TARGET, StreamAborted, new_request_id
from gateway.reload import Reloader
from gateway.responses import error_response_bytes
from gateway.settings import Config, Limits
from gateway.status import traces_summary


class _HeadRefused(Exception):
    def __init__(self, error: GatewayError) -> None:
        self.error = error


MAX_TRAILER_BYTES = 8 * 1024  # bytes the parser may hold of a body's framing (trailers, extensions)


def protocol_for(limits: Limits) -> type[HttpToolsProtocol]:
    """A protocol class bound to this config's limits (uvicorn instantiates it per connection).

    Every state of a connection has a deadline or a byte budget: the head (``head_timeout``, the head
    budget), an inspected body (``body_timeout``, in the app), the framing around a body (trailers and
    chunk extensions: ``MAX_TRAILER_BYTES``), an idle keep-alive (uvicorn's keep-alive timer, then
    ``head_timeout``), and a body nobody will read after an early answer (``linger``).
    A refusal made here never writes into a response that is owed or streaming on the connection.
    """

    head_budget = limits.max_target_bytes + limits.max_header_bytes + 1024  # + request line and CRLFs
    linger = min(limits.head_timeout, 2.0)

    class GatewayProtocol(HttpToolsProtocol):
        _bytes = 0
        _head_done = False
        _head_fed = 0  # bytes fed while the head is unfinished: httptools buffers a whole header value
        _head_timer: asyncio.TimerHandle | None = None  # before on_header sees it, so we count here
        _parsing = True  # False once this connection will read no more requests
        _progress = False  # the last read moved the body forward
        _stalled = 0  # bytes read since the body last moved (trailers, chunk extensions)
        _linger_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._start_head_clock()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_head_clock()
            if self._linger_timer is not None:
                self._linger_timer.cancel()
            super().connection_lost(exc)

        def _start_head_clock(self) -> None:
            self._stop_head_clock()
            self._head_fed = 0
            self._head_timer = self.loop.call_later(limits.head_timeout, self._head_too_slow)

        def _stop_head_clock(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_too_slow(self) -> None:
            self._head_timer = None
            if not self._head_done:
                self._refuse(RequestTimeout("The request head did not arrive in time."))

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._bytes = 0
            self._head_done = False
            if self._head_timer is None:
                self._start_head_clock()

        def on_url(self, url: bytes) -> None:
            super().on_url(url)
            if len(self.url) > limits.max_target_bytes:
                raise _HeadRefused(TargetTooLong())

        def on_header(self, name: bytes, value: bytes) -> None:
            if self._head_done:
                return  # a trailer: never merged into the headers the gateway checked, never forwarded
            self._bytes += len(name) + len(value) + 4
            if len(self.headers) >= limits.max_header_count or self._bytes > limits.max_header_bytes:
                raise _HeadRefused(HeadersTooLarge())
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._head_done = True
            self._moved()
            self._stop_head_clock()
            upgrading = self.parser.should_upgrade()
            error = parser_refusal(self.parser.get_http_version(), self.headers, upgrading)
            if error is not None:
                raise _HeadRefused(error)
            self.scope[RAW_TARGET] = bytes(self.url)  # type: ignore[literal-required]
            super().on_headers_complete()
            if (self.expect_100_continue or upgrading) and self.cycle is not None:
                # A refusal never reads the body the client is holding back; a client that then reuses
                # the connection would have its next request read as that body. And curl (cargo, apt's
                # https helpers) offers h2c on cleartext: a server may ignore an Upgrade (RFC 9110 7.8),
                # so it is answered over HTTP/1.1, but the parser stops at it. Close after answering.
                self.cycle.keep_alive = False

        def on_chunk_header(self) -> None:
            self._moved()

        def on_body(self, body: bytes) -> None:
            self._moved()
            super().on_body(body)

        def on_message_complete(self) -> None:
            self._moved()
            super().on_message_complete()

        def _moved(self) -> None:
            self._progress = True
            self._stalled = 0

        def on_response_complete(self) -> None:
            if not self.transport.is_closing():
                self._after_response()
            super().on_response_complete()
            if not self.transport.is_closing() and self._parsing and not self.pipeline:
                self._head_done = False  # between requests: what comes next is a head, on its clock
                self._start_head_clock()

        def _after_response(self) -> None:
            if not self._parsing:
                self.transport.close()  # refused while this response streamed: close now it is done
            elif not self.pipeline and self.cycle is not None and self.cycle.more_body:
                self._linger()  # answered before the request's body was read

        def _linger(self) -> None:
            """Answered before the body was read (an early 401, say): the rest of the body is never
            parsed or held. The client gets our answer and a FIN, then ``linger`` seconds to stop
            sending before the connection is dropped (closing at once could reset the answer away)."""
            self._parsing = False
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self._linger_timer = self.loop.call_later(linger, self.transport.close)

        def data_received(self, data: bytes) -> None:
            if not self._parsing:
                return  # lingering or refused: read and dropped, never parsed nor held
            self._unset_keepalive_if_required()
            if not self._head_done:  # a head spread over more reads than its budget allows
                if self._head_fed > head_budget:
                    self._refuse(HeadersTooLarge())
                    return
                self._head_fed += len(data)
            self._progress = False
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserCallbackError as exc:
                cause = exc.__context__
                self._refuse(cause.error if isinstance(cause, _HeadRefused) else FramingInvalid())
            except httptools.HttpParserUpgrade:
                self._parsing = False  # only an h2c offer gets here; answered over HTTP/1.1, then closed
            except httptools.HttpParserError:
                self._refuse(FramingInvalid())
            else:
                self._count_stall(len(data))

        def _count_stall(self, size: int) -> None:
            """A read inside a body that moved nothing forward is framing the parser may be holding:
            trailers are buffered whole by httptools, so past the budget the connection is refused.
            (The read on which trailers begin is not counted: the bound is the budget plus one read.)"""
            if self._head_done and not self._progress:
                self._stalled += size
                if self._stalled > MAX_TRAILER_BYTES:
                    self._refuse(HeadersTooLarge(f"Trailers larger than {MAX_TRAILER_BYTES} bytes."))

        def send_400_response(self, msg: str) -> None:
            self._refuse(FramingInvalid())

        def _refuse(self, error: GatewayError) -> None:
            """Refuse what the parser saw; this connection reads no more requests.

            With no response owed, the refusal is written and the connection closed. Otherwise nothing
            is written (it would land inside that response): if the running request's own body broke,
            the connection is closed and the app sees the client gone (its audit line records it);
            else the request being refused is a pipelined one, audited here, and the connection is
            closed once the running response ends.
            """
            self._parsing = False
            self._stop_head_clock()
            cycle = self.cycle
            running = bool(self.pipeline) or (cycle is not None and not cycle.response_complete)
            if running and not self.pipeline and self._head_done and cycle.more_body:
                self.transport.close()
                return
            self.pipeline.clear()
            flow = Flow(request_id=new_request_id(), method="-", peer=self.client[0] if self.client else "-")
            flow.fail(error)
            audit.emit(flow)
            metrics.observe(flow)
            if not running and not self.transport.is_closing():
                self.transport.write(error_response_bytes(error, flow.request_id))
                self.transport.close()

    return GatewayProtocol


class _Quiet(logging.Filter):
    """Drop uvicorn's traceback for a deliberate mid-stream abort (already audited)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, StreamAborted)


class _Server(uvicorn.Server):
    """Signals are handled once for both servers by ``serve``."""

    def install_signal_handlers(self) -> None:  # pragma: no cover - uvicorn < 0.29
        pass

    def capture_signals(self) -> Any:
        import contextlib

        return contextlib.nullcontext()


def _uvicorn_config(app: Any, host: str, port: int, **extra: Any) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        access_log=False,
        server_header=False,
        proxy_headers=False,  # X-Forwarded-* are judged by trusted_proxies in gateway.rewrite, not here
        log_config=None,
        ws="none",
        **extra,
    )


def build_servers(config: Config, proxy: ProxyApp) -> tuple[uvicorn.Server, uvicorn.Server]:
    s = config.settings
    proxy_server = _Server(
        _uvicorn_config(
            proxy,
            s.listen.host,
            s.listen.port,
            http=protocol_for(s.limits),
            lifespan="on",
            date_header=False,
            timeout_graceful_shutdown=math.ceil(s.shutdown.timeout),
            timeout_keep_alive=s.listen.keep_alive_timeout,
        )
    )
    admin_server = _Server(
        _uvicorn_config(
            admin_app(proxy), s.admin.host, s.admin.port, http=protocol_for(s.limits), lifespan="off"
        )
    )
    return proxy_server, admin_server


log = logging.getLogger("proget_gateway")


class ListenError(Exception):
    """A listen address cannot be bound; the message says which and why (one line for the operator)."""


def bind(host: str, port: int, what: str) -> socket.socket:
    """Bind before anything starts, so a busy port is one clear line, not a half-started gateway."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        raise ListenError(f"cannot listen on {host}:{port} ({what}): {exc.strerror or exc}") from None
    return sock


async def serve(config: Config, *, watch: bool = True) -> None:
    """Run both servers until SIGINT/SIGTERM, reloading the config on SIGHUP and on file changes.

    Shutdown (README "Shut down"): the first signal makes /readyz answer 503 at once; the proxy keeps
    accepting for ``shutdown.drain_delay`` seconds, then stops accepting and gives in-flight requests
    ``shutdown.timeout`` seconds; what still runs is aborted (audited ``shutdown_aborted``). The admin
    port answers until the proxy is done. A second signal exits at once.
    """
    s = config.settings
    sockets = (bind(s.listen.host, s.listen.port, "listen"), bind(s.admin.host, s.admin.port, "admin"))
    uvicorn_log = logging.getLogger("uvicorn.error")
    uvicorn_log.addFilter(_Quiet())
    uvicorn_log.setLevel(logging.WARNING)  # our one start line below replaces uvicorn's four per server
    proxy = ProxyApp(config)
    proxy_server, admin_server = build_servers(config, proxy)
    reloader = Reloader(proxy.runtime, Path(config.source))
    loop = asyncio.get_running_loop()
    stop_watching = asyncio.Event()
    tasks: set[asyncio.Task[Any]] = set()

    def spawn(coro: Any) -> None:
        task = loop.create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def stop_accepting() -> None:
        timeout = proxy.runtime.config.settings.shutdown.timeout
        proxy_server.config.timeout_graceful_shutdown = math.ceil(timeout)  # uvicorn takes whole seconds
        log.info("shutdown: no longer accepting; draining %d request(s) for up to %.0f s",
                 len(proxy_server.server_state.tasks), timeout)  # fmt: skip
        proxy_server.should_exit = True

    def on_signal() -> None:
        if proxy.runtime.draining:
            log.warning("shutdown: second signal, exiting now")
            for server in (proxy_server, admin_server):
                server.force_exit = server.should_exit = True
            return
        proxy.runtime.draining = True
        delay = proxy.runtime.config.settings.shutdown.drain_delay
        log.info("shutdown: /readyz answers 503; still accepting for %.1f s (%d request(s) in flight)",
                 delay, len(proxy_server.server_state.tasks))  # fmt: skip
        loop.call_later(delay, stop_accepting)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    loop.add_signal_handler(signal.SIGHUP, lambda: spawn(reloader.reload("SIGHUP")))
    if watch:
        spawn(reloader.watch(stop_watching))
    log.info(
        "proget-gateway %s: proxy on %s, admin on %s, upstream %s; %d client(s), %d key(s); "
        "config %s%s; traces %s",
        __version__,
        _where(sockets[0]),
        _where(sockets[1]),
        s.upstream.url,
        len(s.clients),
        len(s.keys),
        config.source,
        "" if watch else " (reload on SIGHUP only)",
        traces_summary(config),
    )
    admin = loop.create_task(admin_server.serve(sockets=[sockets[1]]))
    await proxy_server.serve(sockets=[sockets[0]])
    stop_watching.set()
    admin_server.should_exit = True
    await admin
    log.info("proget-gateway stopped")


def _where(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
