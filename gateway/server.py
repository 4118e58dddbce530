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
import signal
import socket
from typing import Any

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway import __version__, audit, metrics
from gateway.app import ProxyApp, admin_app
from gateway.audit import Flow
from gateway.errors import FramingInvalid, GatewayError, HeadersTooLarge, RequestTimeout, TargetTooLong
from gateway.pipeline import RAW_TARGET, StreamAborted, new_request_id
from gateway.responses import error_response_bytes
from gateway.settings import Config, Limits


class _HeadRefused(Exception):
    def __init__(self, error: GatewayError) -> None:
        self.error = error


def _upgrade_with_body(headers: list[tuple[bytes, bytes]]) -> bool:
    if not any(name == b"upgrade" for name, _ in headers):
        return False
    return any(
        name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0")
        for name, value in headers
    )


def protocol_for(limits: Limits) -> type[HttpToolsProtocol]:
    """A protocol class bound to this config's limits (uvicorn instantiates it per connection)."""

    head_budget = limits.max_target_bytes + limits.max_header_bytes + 1024  # + request line and CRLFs

    class GatewayProtocol(HttpToolsProtocol):
        _bytes = 0
        _head_done = False
        _head_fed = 0  # bytes fed while the head is unfinished: httptools buffers a whole header value
        _head_timer: asyncio.TimerHandle | None = None  # before on_header sees it, so we count here

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._start_head_clock()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_head_clock()
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
            self._stop_head_clock()
            if _upgrade_with_body(self.headers):
                # The parser treats an Upgrade request as ending at its head: its body would reach
                # ProGet's pooled connection as the start of another request (smuggling).
                raise _HeadRefused(FramingInvalid("An Upgrade offer with a request body is not accepted."))
            self.scope[RAW_TARGET] = bytes(self.url)  # type: ignore[literal-required]
            super().on_headers_complete()
            if self.expect_100_continue and self.cycle is not None:
                # A refusal never reads the body the client is holding back; a client that then reuses
                # the connection would have its next request read as that body. Close after answering.
                self.cycle.keep_alive = False

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._start_head_clock()  # the next request's head, on a kept-alive connection

        def data_received(self, data: bytes) -> None:
            self._unset_keepalive_if_required()
            if not self._head_done:  # a head spread over more reads than its budget allows
                if self._head_fed > head_budget:
                    self._refuse(HeadersTooLarge())
                    return
                self._head_fed += len(data)
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserCallbackError as exc:
                cause = exc.__context__
                error = cause.error if isinstance(cause, _HeadRefused) else FramingInvalid()
                self._refuse(error)
            except httptools.HttpParserUpgrade:
                cycle = self.cycle
                if self._get_upgrade() == b"h2c" and cycle is not None and not cycle.response_complete:
                    # curl (cargo, apt's https helpers) offers h2c on cleartext: a server may ignore an
                    # Upgrade (RFC 9110 7.8). Answer over HTTP/1.1 and close, since the parser stops here.
                    cycle.keep_alive = False
                else:
                    self._refuse(FramingInvalid("Protocol upgrades are not supported."))
            except httptools.HttpParserError:
                self._refuse(FramingInvalid())

        def send_400_response(self, msg: str) -> None:
            self._refuse(FramingInvalid())

        def _refuse(self, error: GatewayError) -> None:
            flow = Flow(request_id=new_request_id(), method="-", peer=self.client[0] if self.client else "-")
            flow.fail(error)
            audit.emit(flow)
            metrics.observe(flow)
            if not self.transport.is_closing():
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


def build_servers(config: Config) -> tuple[uvicorn.Server, uvicorn.Server]:
    s = config.settings
    proxy = ProxyApp(config)
    proxy_server = _Server(
        _uvicorn_config(
            proxy, s.listen.host, s.listen.port, http=protocol_for(s.limits), lifespan="on", date_header=False
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


async def serve(config: Config) -> None:
    """Run both servers until SIGINT/SIGTERM; then drain in-flight requests and stop."""
    s = config.settings
    sockets = (bind(s.listen.host, s.listen.port, "listen"), bind(s.admin.host, s.admin.port, "admin"))
    uvicorn_log = logging.getLogger("uvicorn.error")
    uvicorn_log.addFilter(_Quiet())
    uvicorn_log.setLevel(logging.WARNING)  # our one start line below replaces uvicorn's four per server
    servers = build_servers(config)
    loop = asyncio.get_running_loop()

    def stop() -> None:
        for server in servers:
            server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    log.info(
        "proget-gateway %s: proxy on %s, admin on %s, upstream %s; %d client(s), %d key(s); config %s",
        __version__,
        _where(sockets[0]),
        _where(sockets[1]),
        s.upstream.url,
        len(s.clients),
        len(s.keys),
        config.source,
    )
    await asyncio.gather(
        *(server.serve(sockets=[sock]) for server, sock in zip(servers, sockets, strict=True))
    )
    log.info("proget-gateway stopped")


def _where(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
