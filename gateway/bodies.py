"""The client's side of bodies: read a small body whole (capped), or stream it; notice a client leaving.

Only bodies the gateway must rewrite are read whole, and never beyond the cap: a declared length over
the cap is refused before a byte is read. Everything else is handed to the upstream client as an
async iterator, so a multi-GB push uses one chunk of memory at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from gateway.audit import Flow
from gateway.errors import BodyTooLarge, ClientAborted, FramingInvalid, RequestTimeout
from gateway.framing import Head
from gateway.types import Receive


async def read_capped(receive: Receive, head: Head, cap: int, flow: Flow, within: float) -> bytes:
    """Read the whole body, refusing (413) as soon as it is known to exceed ``cap`` and (408) if it
    takes longer than ``within`` seconds: held bodies cost memory, so a slow sender must not keep one."""
    if head.content_length is not None and head.content_length > cap:
        raise BodyTooLarge(f"Bodies this gateway inspects are limited to {cap} bytes.")
    try:
        async with asyncio.timeout(within):
            return await _read_all(receive, cap, flow)
    except TimeoutError:
        raise RequestTimeout("The request body did not arrive in time.") from None


async def _read_all(receive: Receive, cap: int, flow: Flow) -> bytes:
    buf = bytearray()
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            flow.client_gone = True
            raise ClientAborted()
        buf += message.get("body", b"")
        if len(buf) > cap:
            raise BodyTooLarge(f"Bodies this gateway inspects are limited to {cap} bytes.")
        more = message.get("more_body", False)
    flow.bytes_in = len(buf)
    return bytes(buf)


async def stream_body(receive: Receive, flow: Flow, declared: int | None) -> AsyncIterator[bytes]:
    """The client's body chunk by chunk, as the upstream client asks for it (backpressure both ways).

    A body that ends short of its declared Content-Length is an error, never a short upload: ProGet
    would wait for the missing bytes on a pooled connection and read the next request as them.
    """
    flow.request_body_done = False
    sent = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            flow.client_gone = True
            raise ClientAborted()
        chunk = message.get("body", b"")
        if chunk:
            flow.bytes_in += len(chunk)
            sent += len(chunk)
            yield chunk
        more = message.get("more_body", False)
    if declared is not None and sent != declared:
        raise FramingInvalid(f"The body ended after {sent} of {declared} declared bytes.")
    flow.request_body_done = True


@asynccontextmanager
async def cancel_on_disconnect(receive: Receive, flow: Flow) -> AsyncIterator[None]:
    """While the response streams, cancel this task if the client goes away (stops the upstream read).

    Only used once the request body has been read, so this is the only reader of ``receive``.
    """
    task = asyncio.current_task()

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        if not flow.response_done and task is not None:
            flow.client_gone = True
            task.cancel()

    watcher = asyncio.create_task(watch())
    try:
        yield
    finally:
        watcher.cancel()
