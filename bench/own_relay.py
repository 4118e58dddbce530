"""The gateway's own transport with no checks: ``gateway.http1`` + ``gateway.upstream``, nothing else.

It forwards method, target, headers and body exactly like ``bench/relay.py`` but on the gateway's
own server and client, so "gateway ÷ this row" is the price of the checks, audit line and metrics
alone, and "this row ÷ bare relay" what owning both ends of the wire saved (issue 9).
"""

from __future__ import annotations

import argparse
import socket

import uvloop
from relay import client_body

from gateway.forward import SMALL  # a small answer of known length is sent whole, in one write
from gateway.http1 import Server, Site
from gateway.pipeline import RAW_TARGET
from gateway.settings import Limits, UpstreamSettings
from gateway.types import Receive, Scope, Send
from gateway.upstream import UpstreamClient, UpstreamRequest

HOP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"host", b"content-length"})


class OwnRelay:
    def __init__(self, upstream: str) -> None:
        self.host = upstream.split("//", 1)[1]
        self.client = UpstreamClient(UpstreamSettings(url=upstream))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [
            (k.decode(), v.decode()) for k, v in scope["headers"] if k not in HOP or k == b"content-length"
        ]
        streamed = scope["method"] in ("PUT", "POST")
        chunked = streamed and not any(k == "content-length" for k, _ in headers)

        if chunked:
            headers.append(("transfer-encoding", "chunked"))
        target = scope[RAW_TARGET].decode("latin-1")
        request = UpstreamRequest(scope["method"], target, [("host", self.host), *headers], None, chunked)
        response = await self.client.open(request, client_body(receive) if streamed else None)
        try:
            length = response.content_length
            out = [
                (k, v) for k, v in response.headers if k.lower() not in HOP or k.lower() == b"content-length"
            ]
            await send({"type": "http.response.start", "status": response.status, "headers": out})
            if length is not None and length <= SMALL:
                await send({"type": "http.response.body", "body": await response.read_small()})
                return
            async for chunk in response.chunks():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            response.close()


async def serve(upstream: str, port: int) -> None:
    sock = socket.create_server(("127.0.0.1", port))
    await Server(Site(OwnRelay(upstream), Limits(), 5.0, date_header=False)).serve(sock)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvloop.run(serve(args.upstream, args.port))


if __name__ == "__main__":
    main()
