"""Send the rewritten request upstream and relay the answer, streaming both ways.

Small answers (known length under 64 KiB, HEAD, 204/304) are read and sent in one message; anything
else streams chunk by chunk with backpressure, and a client that leaves cancels the upstream read.
If ProGet fails after the response has started, the error propagates so the server closes the
connection: the client sees a broken stream, never a truncated body that looks complete.
"""

from __future__ import annotations

import time

from gateway.audit import Flow
from gateway.bodies import cancel_on_disconnect, stream_body
from gateway.framing import Head
from gateway.rewrite import ClientView, rewrite_response_headers
from gateway.settings import Config, UpstreamKey
from gateway.types import Receive, Send
from gateway.upstream import UpstreamClient, UpstreamRequest, UpstreamResponse

SMALL = 64 * 1024
_NO_BODY_STATUS = frozenset({204, 304})


async def forward(
    flow: Flow,
    request: UpstreamRequest,
    head: Head,
    key: UpstreamKey,
    view: ClientView,
    upstream: UpstreamClient,
    config: Config,
    receive: Receive,
    send: Send,
) -> None:
    """Relay one exchange; raises our errors (before or after the response started)."""
    streamed = request.body is None and head.has_body
    sent = time.perf_counter()
    response = await upstream.open(
        request, stream_body(receive, flow, head.content_length) if streamed else None
    )
    flow.upstream_s = time.perf_counter() - sent
    if request.body is not None:
        flow.bytes_in = len(request.body)  # the inspected body as relayed (credential stripped)
    try:
        headers = rewrite_response_headers(
            response.headers, key, response.status, config.settings.upstream.url, view.public_origin
        )
        headers.append((b"x-request-id", flow.request_id.encode()))
        flow.status = response.status
        if _is_small(request.method, response):
            await _send_whole(flow, response, headers, send)
        else:
            await _send_streamed(flow, response, headers, receive, send)
    finally:
        response.close()


def _is_small(method: str, response: UpstreamResponse) -> bool:
    if method == "HEAD" or response.status in _NO_BODY_STATUS:
        return True
    length = response.content_length
    return length is not None and length <= SMALL


async def _send_whole(
    flow: Flow, response: UpstreamResponse, headers: list[tuple[bytes, bytes]], send: Send
) -> None:
    body = b"" if flow.method == "HEAD" or response.status in _NO_BODY_STATUS else await response.read_small()
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    flow.response_started = True
    flow.response_done = True
    await send({"type": "http.response.body", "body": body, "more_body": False})
    flow.bytes_out = len(body)


async def _send_streamed(
    flow: Flow, response: UpstreamResponse, headers: list[tuple[bytes, bytes]], receive: Receive, send: Send
) -> None:
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    flow.response_started = True
    if not flow.request_body_done:  # ProGet answered before reading our whole upload: nothing to watch
        await _relay(flow, response, send)
        return
    async with cancel_on_disconnect(receive, flow):
        await _relay(flow, response, send)


async def _relay(flow: Flow, response: UpstreamResponse, send: Send) -> None:
    async for chunk in response.chunks():
        flow.bytes_out += len(chunk)
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    flow.response_done = True
    await send({"type": "http.response.body", "body": b"", "more_body": False})
