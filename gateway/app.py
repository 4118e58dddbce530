"""The two ASGI apps: the proxy (a plain ASGI callable, no framework on the hot path) and the admin
app (Starlette: /healthz, /readyz, /metrics), which never shares a port with the proxy.

The proxy is plain ASGI because every request passes through it: Starlette's Request/Response objects
add allocations per request that buy nothing when the pipeline works on the raw scope. The admin app
is low-traffic and benefits from Starlette's routing.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from gateway import status, upstream_health
from gateway.admission import Admission
from gateway.metrics import REGISTRY
from gateway.pipeline import Runtime, handle
from gateway.settings import Config, tracing_wanted
from gateway.types import Receive, Scope, Send
from gateway.upstream import UpstreamClient
from gateway.workload_identity import JwtVerifier


class ProxyApp:
    """The gateway's proxy port. Owns the upstream client and the JWT verifier (``startup``/``shutdown``)."""

    def __init__(self, config: Config) -> None:
        self.runtime = Runtime(config, UpstreamClient(config.settings.upstream), JwtVerifier(config))
        self.runtime.admission = Admission(config)
        if tracing_wanted(config.settings, os.environ):
            from gateway.tracing import Tracer  # the SDK is loaded only when traces are on

            self.runtime.tracer = Tracer(config)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await handle(scope, receive, send, self.runtime)

    async def startup(self) -> None:
        """Before the first request: the upstream pool, the JWT verifier, a frozen start-up heap."""
        await self.runtime.upstream.start()
        if self.runtime.jwt is not None:
            await self.runtime.jwt.start()
        _freeze_startup_heap()

    async def shutdown(self) -> None:
        """After the last request: close what was opened and export the traces still queued."""
        await self.runtime.upstream.close()
        if self.runtime.admission is not None:
            await self.runtime.admission.close()
        if self.runtime.jwt is not None:
            await self.runtime.jwt.close()
        if self.runtime.tracer is not None:
            await asyncio.to_thread(self.runtime.tracer.shutdown)


# Young objects are collected after this many allocations (CPython's default: 700). A request
# allocates ~100 containers that die with it; at 700 the collector ran every few requests and moved the
# objects of the requests still in flight to the older generations, to be walked again there. At 20,000
# most of what a collection finds is already freed: ~5 µs less CPU per request at c=32 (bench, issue 9:
# 98.6 to 101.9 → 95.0 to 95.8 µs in alternating runs; 5,000 and 100,000 measured the same as 20,000).
YOUNG_COLLECTION_THRESHOLD = (20_000, 50, 50)


def _freeze_startup_heap() -> None:
    """Move everything allocated at start-up out of the collector's reach, and collect less often.

    The config, the compiled rules and the imported libraries never become garbage, yet every full
    collection walked them: about 35 ms per pass, which set the p99 under load (issue 9: 49 → 26 ms).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*YOUNG_COLLECTION_THRESHOLD)


class Readiness:
    """Ready = config loaded and keys resolved (true once we run) and ProGet answers HTTP at all (any status:
    its component health goes to gauges, see upstream_health.py).

    The upstream check is cached for a second so a tight probe loop does not become load on ProGet.
    """

    def __init__(self, upstream: UpstreamClient, ttl: float = 1.0) -> None:
        self._upstream = upstream
        self._ttl = ttl
        self._checked = 0.0
        self._ok = False
        self.components: dict[str, float] = {}  # ProGet's component health, for the status page

    async def ready(self) -> bool:
        now = time.monotonic()
        if now - self._checked > self._ttl:
            self._ok, doc = await self._upstream.health()
            upstream_health.record(doc if self._ok else None)
            self.components = upstream_health.component_health(doc) if self._ok else {}
            self._checked = now
        return self._ok


def admin_app(proxy: ProxyApp) -> Starlette:
    readiness = Readiness(proxy.runtime.upstream)

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(_: Request) -> Response:
        upstream = await readiness.ready()
        draining = proxy.runtime.draining
        ok = upstream and not draining
        body = {
            "ready": ok,
            "config": True,
            "keys": True,
            "upstream": upstream,
            "draining": draining,
            "generation": proxy.runtime.config.generation,
        }
        return JSONResponse(body, status_code=200 if ok else 503)

    async def metrics(_: Request) -> Response:
        await readiness.ready()  # refreshes proget_upstream_health (cached: no extra load on ProGet)
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    async def page(request: Request) -> Response:
        ok = await readiness.ready()
        runtime = proxy.runtime
        form = status.parse_form(dict(request.query_params), runtime.config)
        upstream = status.Upstream(ok, readiness.components)
        return HTMLResponse(status.render(runtime.config, runtime.recent, upstream, form))

    routes = [
        Route("/", page),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
    ]
    return Starlette(routes=routes)
