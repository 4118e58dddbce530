"""Run the proxy and admin ports in one process and one event loop (uvloop), until a signal.

Both ports are served by :mod:`gateway.http1`, the gateway's own HTTP/1.1 server; this module binds
them, starts and stops the proxy app, reloads the config, and drains on SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from pathlib import Path
from typing import Any

from gateway import __version__
from gateway.app import ProxyApp, admin_app
from gateway.http1 import Server, Site
from gateway.reload import Reloader
from gateway.settings import Config
from gateway.status import traces_summary


def build_servers(config: Config, proxy: ProxyApp) -> tuple[Server, Server]:
    """The proxy and admin ports, both on :mod:`gateway.http1` with this config's head limits."""
    s = config.settings
    proxy_site = Site(proxy, s.limits, s.listen.keep_alive_timeout, date_header=False)  # ProGet's Date passes
    admin_site = Site(admin_app(proxy), s.limits, 5.0, date_header=True)
    return Server(proxy_site), Server(admin_site)


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
        log.info("shutdown: no longer accepting; draining %d request(s) for up to %.0f s",
                 proxy_server.in_flight, timeout)  # fmt: skip
        proxy_server.stop(timeout)

    def on_signal() -> None:
        if proxy.runtime.draining:
            log.warning("shutdown: second signal, exiting now")
            for server in (proxy_server, admin_server):
                server.force = True
                server.stop(0)
            return
        proxy.runtime.draining = True
        delay = proxy.runtime.config.settings.shutdown.drain_delay
        log.info("shutdown: /readyz answers 503; still accepting for %.1f s (%d request(s) in flight)",
                 delay, proxy_server.in_flight)  # fmt: skip
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
    await proxy.startup()
    admin = loop.create_task(admin_server.serve(sockets[1]))
    try:
        await proxy_server.serve(sockets[0])
    finally:
        stop_watching.set()
        admin_server.stop(0)
        await admin
        if not proxy_server.force:
            await proxy.shutdown()
    log.info("proget-gateway stopped")


def _where(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
