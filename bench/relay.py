"""The bare relay: the yardstick the gateway's speed target is written against (issue 9).

uvicorn (httptools, uvloop) + one pooled aiohttp session, plain ASGI, no framework: it forwards the
method, path, query, headers and body and streams the answer back. It does none of the gateway's
work, so "gateway req/s ÷ relay req/s" is the price of every check the gateway keeps.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import uvicorn

HOP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"host", b"content-length"})


async def client_body(receive: Any) -> AsyncIterator[bytes]:
    """The client's body as the ASGI server hands it over, chunk by chunk."""
    more = True
    while more:
        message = await receive()
        yield message.get("body", b"")
        more = message.get("more_body", False)


class Relay:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                self.session = aiohttp.ClientSession(self.upstream, auto_decompress=False)
                await send({"type": "lifespan.startup.complete"})
            if self.session is not None:
                await self.session.close()
            await send({"type": "lifespan.shutdown.complete"})
            return
        headers = [(k.decode(), v.decode()) for k, v in scope["headers"] if k not in HOP]
        query = scope["query_string"].decode()
        target = scope["path"] + ("?" + query if query else "")

        data = client_body(receive) if scope["method"] in ("PUT", "POST") else None
        assert self.session is not None
        async with self.session.request(scope["method"], target, headers=headers, data=data) as resp:
            out = [(k, v) for k, v in resp.raw_headers if k.lower() not in HOP]
            await send({"type": "http.response.start", "status": resp.status, "headers": out})
            async for chunk in resp.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        Relay(args.upstream),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
