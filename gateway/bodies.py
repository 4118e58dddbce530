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
from gateway.errors import BodyTooLarge, ClientAborted, FramingInvalid, InspectionBusy, RequestTimeout
from gateway.framing import Head
from gateway.types import Receive

ANONYMOUS_SHARE = 8  # a credential-less request may hold at most 1/8 of the budget, all together


class InspectionBudget:
    """The bytes of inspected bodies the process holds at once, and the share strangers may use.

    Each body is capped on its own (``max_rewrite_body_bytes``), but 64 credential-less clients each
    sending ~1 MiB once made the gateway hold 80 MiB. Bytes are taken as they are declared or arrive
    (nothing is read past what fits) and given back when the request ends (``Flow.release``, called
    once by the pipeline's handler), so a refusal, an abort or an exception can never leak them.
    Over budget → 503 ``inspection_capacity`` with ``Retry-After``.
    """

    def __init__(self, total: int) -> None:
        self.held = 0
        self.anonymous_held = 0
        self.resize(total)

    def resize(self, total: int) -> None:
        """A reloaded limit: what is held stays held; new bytes are taken against the new total."""
        self.total = total
        self.anonymous_total = max(1, total // ANONYMOUS_SHARE)

    def hold(self, flow: Flow, *, anonymous: bool) -> _Hold:
        hold = _Hold(self, anonymous)
        flow.release = hold.release
        return hold


class _Hold:
    """What one request holds of an :class:`InspectionBudget`."""

    __slots__ = ("anonymous", "budget", "bytes")

    def __init__(self, budget: InspectionBudget, anonymous: bool) -> None:
        self.budget, self.anonymous, self.bytes = budget, anonymous, 0

    def take(self, n: int) -> None:
        b = self.budget
        if b.held + n > b.total or (self.anonymous and b.anonymous_held + n > b.anonymous_total):
            raise InspectionBusy()
        b.held += n
        self.bytes += n
        if self.anonymous:
            b.anonymous_held += n

    def release(self) -> None:
        b = self.budget
        b.held -= self.bytes
        if self.anonymous:
            b.anonymous_held -= self.bytes
        self.bytes = 0


async def read_capped(
    receive: Receive, head: Head, cap: int, flow: Flow, within: float, hold: _Hold
) -> bytes:
    """Read the whole body, refusing (413) as soon as it is known to exceed ``cap``, (503) when the
    process holds as many inspected bytes as it may, and (408) if it takes longer than ``within``
    seconds: held bodies cost memory, so a slow sender must not keep one."""
    if head.content_length is not None:
        if head.content_length > cap:
            raise BodyTooLarge(f"Bodies this gateway inspects are limited to {cap} bytes.")
        hold.take(head.content_length)  # refused before a byte is read
    try:
        async with asyncio.timeout(within):
            return await _read_all(receive, cap, flow, None if head.content_length is not None else hold)
    except TimeoutError:
        raise RequestTimeout("The request body did not arrive in time.") from None


async def _read_all(receive: Receive, cap: int, flow: Flow, hold: _Hold | None) -> bytes:
    buf = bytearray()
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            flow.client_gone = True
            raise ClientAborted()
        chunk = message.get("body", b"")
        if len(buf) + len(chunk) > cap:
            raise BodyTooLarge(f"Bodies this gateway inspects are limited to {cap} bytes.")
        if hold is not None:  # chunked: taken as it arrives
            hold.take(len(chunk))
        buf += chunk
        more = message.get("more_body", False)
    return bytes(buf)  # bytes_in counts what reaches ProGet: gateway.forward sets it


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
