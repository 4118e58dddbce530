"""Send the rewritten request to ProGet and stream the answer; the only module that knows aiohttp.

aiohttp was chosen by measurement (see README "Speed"): under 32 concurrent connections httpx's pool
collapses (encode/httpx#3215) while aiohttp's holds. Everything aiohttp-specific stays here so the
client can be swapped: callers see :class:`UpstreamClient`, :class:`UpstreamResponse` and our own
errors, which ``_translate`` maps from aiohttp's in exactly one place.

What aiohttp would otherwise do on its own is switched off: no cookie jar, no proxy or netrc from the
environment, no decompression, no added User-Agent/Accept/Content-Type, no redirects, no re-quoting of
the path (``encoded=True``), so the bytes the policy checked are the bytes ProGet receives.

The read timeout is ours, not aiohttp's ``sock_read``: aiohttp 3.14 can leave a ``sock_read`` timer
armed on a pooled connection after a download whose reading was paused by backpressure, and the next
request on that connection (a multi-GB upload, say) then times out mid-body. So ``sock_read`` is
off and ``timeouts.read`` is enforced here: from the end of the request body to ProGet's response
head, and between two chunks of ProGet's body; ``timeouts.write`` bounds how long ProGet may take to
accept each chunk of an upload (aiohttp has no write timeout of its own).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from gateway.errors import GatewayError, UpstreamAborted, UpstreamError, UpstreamTimeout, UpstreamUnreachable
from gateway.rewrite import UpstreamRequest
from gateway.settings import Timeouts, UpstreamSettings

_SKIP_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")
CHUNK = 256 * 1024
WATCH = 0.25  # seconds: how soon a body ProGet broke off is noticed (see _next_chunk)


def _translate(exc: BaseException, *, started: bool) -> GatewayError:
    """aiohttp/asyncio failure → our error; after the response started every failure is an abort."""
    ours = _our_error(exc)
    if ours is not None:  # raised by our own body iterator inside aiohttp (a short or aborted upload)
        return ours
    if started:
        return UpstreamAborted()
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return UpstreamTimeout()
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ServerDisconnectedError | OSError):
        return UpstreamUnreachable()
    return UpstreamError("ProGet's answer could not be read.")


def _our_error(exc: BaseException | None, depth: int = 5) -> GatewayError | None:
    while exc is not None and depth > 0:
        if isinstance(exc, GatewayError):
            return exc
        exc, depth = exc.__cause__ or exc.__context__, depth - 1
    return None


@dataclass(slots=True)
class UpstreamResponse:
    status: int
    headers: list[tuple[bytes, bytes]]
    _response: aiohttp.ClientResponse
    read_timeout: float

    @property
    def content_length(self) -> int | None:
        return self._response.content_length

    async def read_small(self) -> bytes:
        """Read a body already known to be small (Content-Length under the streaming threshold).

        A small answer usually arrives with its head, so it is read without arming a timer: a timeout
        block (a timer, a task lookup, on 3.11 a ``getpid`` per loop lookup) cost about 14 µs here.
        """
        try:
            if self._response.content.is_eof():
                return await self._response.read()
            async with asyncio.timeout(self.read_timeout):
                return await self._response.read()
        except Exception as exc:
            raise _translate(exc, started=False) from None

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives; a failure midway raises UpstreamAborted."""
        try:
            while chunk := await self._next_chunk():
                yield chunk
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise _translate(exc, started=True) from None

    async def _next_chunk(self) -> bytes:
        """``readany`` under ``timeouts.read``, woken every ``WATCH`` seconds to see whether ProGet's
        connection is gone: aiohttp's C parser neither raises a malformed chunk-size line nor the EOF
        after it into ``readany`` (its pure-Python parser does), so a broken body would otherwise hang
        the client's stream until ``timeouts.read``. Costs one timer per read, as a single timeout did.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.read_timeout
        while True:
            try:
                async with asyncio.timeout_at(min(deadline, loop.time() + WATCH)):
                    return await self._response.content.readany()
            except TimeoutError:
                if loop.time() >= deadline:
                    raise
                if self._broken_off():
                    raise UpstreamAborted() from None

    def _broken_off(self) -> bool:
        """ProGet's connection is gone and the body never reached its end (an EOF fed just as the
        timer fired is not a fault: the next ``readany`` returns it)."""
        connection = self._response.connection
        return not self._response.content.is_eof() and (connection is None or connection.closed)

    def close(self) -> None:
        """Give the connection back when the body was read, drop it otherwise (cancels the upstream)."""
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


async def _timed_body(
    body: AsyncIterable[bytes], deadline: asyncio.Timeout, t: Timeouts
) -> AsyncIterator[bytes]:
    """Relay the client's body under ``timeouts.write``, then give ProGet ``timeouts.read`` to answer.

    Each chunk must be taken by ProGet within ``write`` seconds (a stalled upstream is cut off);
    waiting for the client's next chunk is not ProGet's time, so the clock stops meanwhile.
    """
    loop = asyncio.get_running_loop()
    async for chunk in body:
        deadline.reschedule(loop.time() + t.write)
        yield chunk
        deadline.reschedule(None)
    deadline.reschedule(loop.time() + t.read)


class UpstreamClient:
    """One pooled aiohttp session for the life of the process."""

    def __init__(self, settings: UpstreamSettings) -> None:
        self._settings = settings
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        s = self._settings
        t = s.timeouts
        connector = aiohttp.TCPConnector(limit=0, ssl=self._ssl(), ttl_dns_cache=60, keepalive_timeout=30)
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            trust_env=False,
            skip_auto_headers=_SKIP_AUTO_HEADERS,
            timeout=aiohttp.ClientTimeout(
                total=None, connect=t.pool + t.connect, sock_connect=t.connect, sock_read=None
            ),
            read_bufsize=CHUNK,
            max_line_size=16 * 1024,
            max_field_size=64 * 1024,
        )

    def _ssl(self) -> ssl.SSLContext | bool:
        tls = self._settings.tls
        if not tls.verify:
            return False
        return ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def open(self, request: UpstreamRequest, body: AsyncIterable[bytes] | None) -> UpstreamResponse:
        """Send the request (streaming ``body`` when the request carries no rewritten body)."""
        if self._session is None:
            raise RuntimeError("UpstreamClient.start() was not awaited")
        timeouts = self._settings.timeouts
        read = timeouts.read
        try:
            async with asyncio.timeout(None) as deadline:
                data: bytes | AsyncIterable[bytes] | None = request.body
                if data is None and body is not None:
                    data = _timed_body(body, deadline, timeouts)
                else:
                    deadline.reschedule(asyncio.get_running_loop().time() + read)
                response = await self._session.request(
                    request.method,
                    URL(request.url, encoded=True),
                    headers=request.headers,
                    data=data,
                    allow_redirects=False,
                    compress=None,
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise _translate(exc, started=False) from None
        return UpstreamResponse(response.status, list(response.raw_headers), response, read)

    async def health(self, limit: float = 2.0) -> tuple[bool, Any]:
        """Does ProGet answer HTTP at all (any status: readiness), and its /health/json document (None if
        not JSON). A 500 from a stopped ProGet component must not drain the gateway (upstream_health.py)."""
        if self._session is None:
            return False, None
        try:
            async with self._session.get(
                self._settings.url + "/health/json", timeout=aiohttp.ClientTimeout(total=limit)
            ) as response:
                try:
                    return True, await response.json(content_type=None)
                except ValueError:
                    return True, None
        except (TimeoutError, aiohttp.ClientError, OSError):
            return False, None
