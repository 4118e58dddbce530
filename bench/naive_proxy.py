"""The simplest streaming proxy one could write with Starlette and an HTTP client: a yardstick.

It does none of the gateway's work (no credentials, no policy, no rewriting); it only relays. Running
it with ``--client httpx`` and ``--client aiohttp`` on the same server stack measures the client
library alone, which is how gateway/upstream.py's client was chosen (see bench/README.md).
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

HOP = {"connection", "keep-alive", "transfer-encoding", "host", "content-length"}


def httpx_app(upstream: str) -> Starlette:
    import httpx

    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
        async with httpx.AsyncClient(base_url=upstream, timeout=300, limits=limits) as client:
            state["client"] = client
            yield

    async def relay(request: Request) -> StreamingResponse:
        client: httpx.AsyncClient = state["client"]
        headers = [(k, v) for k, v in request.headers.items() if k not in HOP]
        body = request.stream() if request.method in ("PUT", "POST") else None
        req = client.build_request(request.method, request.url.path, headers=headers, content=body)
        resp = await client.send(req, stream=True)
        out = {k: v for k, v in resp.headers.items() if k not in HOP}
        return StreamingResponse(resp.aiter_raw(65536), resp.status_code, out, background=None)

    return Starlette(routes=[Route("/{p:path}", relay, methods=["GET", "PUT", "POST"])], lifespan=lifespan)


def aiohttp_app(upstream: str) -> Starlette:
    import aiohttp

    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=100)
        async with aiohttp.ClientSession(upstream, connector=connector, auto_decompress=False) as session:
            state["session"] = session
            yield

    async def relay(request: Request) -> StreamingResponse:
        session: aiohttp.ClientSession = state["session"]
        headers = [(k, v) for k, v in request.headers.items() if k not in HOP]
        body = request.stream() if request.method in ("PUT", "POST") else None
        resp = await session.request(request.method, request.url.path, headers=headers, data=body)
        out = {k: v for k, v in resp.headers.items() if k.lower() not in HOP}

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async for chunk in resp.content.iter_chunked(65536):
                    yield chunk
            finally:
                resp.release()

        return StreamingResponse(chunks(), resp.status, out)

    return Starlette(routes=[Route("/{p:path}", relay, methods=["GET", "PUT", "POST"])], lifespan=lifespan)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--client", choices=["httpx", "aiohttp"], required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = httpx_app(args.upstream) if args.client == "httpx" else aiohttp_app(args.upstream)
    uvicorn.run(app, host="127.0.0.1", port=args.port, loop="uvloop", http="httptools", log_level="warning")


if __name__ == "__main__":
    main()
