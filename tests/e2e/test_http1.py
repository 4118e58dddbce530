"""gateway/http1.py, the gateway's own HTTP/1.1 server, with an app of the test's own on loopback.

The whole gateway's framing guarantees are tested through the proxy in test_connections.py and
test_attacks.py; here the server alone is driven with raw sockets on both event loops, so the
properties hold for any app: whatever way a request is cut into TCP segments, the app sees the same
head, raw target and body; answers are framed exactly; a header that would break the framing never
reaches the wire; bodies are paused, not buffered; and a graceful stop finishes what runs.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.http1 import HIGH_WATER, MAX_PIPELINED, Server, Site
from gateway.pipeline import RAW_TARGET
from gateway.settings import Limits
from gateway.types import Message, Receive, Scope, Send
from tests.e2e.conftest import Run

pytestmark = pytest.mark.usefixtures("write_modes")  # both ways gateway.outbox sends


class Recorder:
    """An app that records each request (scope and the whole body) and answers ``answer``."""

    def __init__(self, answer: list[Message] | None = None) -> None:
        self.seen: list[tuple[Scope, bytes]] = []
        self.answer = answer or [
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]},
            {"type": "http.response.body", "body": b"ok"},
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        if _has_body(scope):
            more = True
            while more:
                message = await receive()
                body += message.get("body", b"")
                more = message.get("more_body", False)
        self.seen.append((scope, body))
        for message in self.answer:
            await send(message)


def _has_body(scope: Scope) -> bool:
    return any(n in (b"content-length", b"transfer-encoding") for n, _ in scope["headers"])


@asynccontextmanager
async def serving(app: Any, **limits: Any) -> AsyncIterator[tuple[Server, int]]:
    sock = socket.create_server(("127.0.0.1", 0))
    server = Server(Site(app, Limits(**limits), 5.0, date_header=False))
    task = asyncio.get_running_loop().create_task(server.serve(sock))
    try:
        yield server, sock.getsockname()[1]
    finally:
        server.stop(1.0)
        await task
        sock.close()


async def exchange(port: int, pieces: list[bytes], *, until_close: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for piece in pieces:
        writer.write(piece)
        await writer.drain()
        await asyncio.sleep(0)
    data = await asyncio.wait_for(reader.read(), 10) if until_close else b""
    writer.close()
    return data


def cut(data: bytes, points: list[int]) -> list[bytes]:
    edges = sorted({0, len(data), *(p % (len(data) + 1) for p in points)})
    return [data[a:b] for a, b in itertools.pairwise(edges)]


names = st.from_regex(r"x-[a-z0-9-]{1,15}", fullmatch=True)
values = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=30)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    target=st.from_regex(r"/[A-Za-z0-9/%._~=&?-]{0,60}", fullmatch=True),
    headers=st.lists(st.tuples(names, values), max_size=6),
    body=st.binary(max_size=4000),
    chunked=st.booleans(),
    points=st.lists(st.integers(min_value=0, max_value=10000), max_size=10),
)
def test_any_segmentation_gives_the_app_the_same_request(
    run: Run, target: str, headers: list[tuple[str, str]], body: bytes, chunked: bool, points: list[int]
) -> None:
    lines = [f"POST {target} HTTP/1.1", "Host: h", *(f"{n}: {v}" for n, v in headers), "Connection: close"]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        framed = b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in cut(body, points[:3]) if p) + b"0\r\n\r\n"
    else:
        lines.append(f"Content-Length: {len(body)}")
        framed = body
    request = ("\r\n".join(lines) + "\r\n\r\n").encode() + framed
    app = Recorder()

    async def scenario() -> bytes:
        async with serving(app) as (_, port):
            return await exchange(port, cut(request, points))

    answer = run(scenario())
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\nok")
    ((scope, got),) = app.seen
    assert scope[RAW_TARGET] == target.encode() and got == body
    assert (
        scope["raw_path"] + (b"?" + scope["query_string"] if b"?" in target.encode() else b"")
        == target.encode()
    )
    assert [(n, v) for n, v in scope["headers"] if n.startswith(b"x-")] == [
        (n.encode(), v.encode()) for n, v in headers
    ]


def response(status: int, headers: list[tuple[bytes, bytes]], *bodies: bytes) -> list[Message]:
    start: Message = {"type": "http.response.start", "status": status, "headers": headers}
    parts: list[Message] = [{"type": "http.response.body", "body": b, "more_body": True} for b in bodies]
    return [start, *parts, {"type": "http.response.body", "body": b"", "more_body": False}]


@pytest.mark.parametrize(
    ("method", "answer", "expected"),
    [
        ("GET", response(200, [(b"content-length", b"5")], b"he", b"llo"), b"content-length: 5\r\n\r\nhello"),
        (
            "GET",
            response(200, [], b"he", b"llo"),
            b"transfer-encoding: chunked\r\n\r\n2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n",
        ),
        ("HEAD", response(200, [(b"content-length", b"5")]), b"content-length: 5\r\n\r\n"),
        ("GET", response(204, []), b"HTTP/1.1 204 No Content\r\n\r\n"),
        ("GET", response(304, [(b"etag", b'"1"')]), b'etag: "1"\r\n\r\n'),
        ("GET", response(304, [(b"content-length", b"99")]), b"content-length: 99\r\n\r\n"),
    ],
    ids=["length", "chunked", "head", "no_content", "not_modified", "not_modified_with_length"],
)
def test_answers_are_framed_exactly_and_the_connection_kept(
    run: Run, method: str, answer: list[Message], expected: bytes
) -> None:
    app = Recorder(answer)

    async def scenario() -> bytes:
        async with serving(app) as (_, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            request = f"{method} /x HTTP/1.1\r\nHost: h\r\n\r\n".encode()
            writer.write(request + request)  # pipelined: the second is answered after the first
            await writer.drain()
            await asyncio.sleep(0.3)
            writer.write(b"GET /last HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
            data = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            return data

    data = run(scenario())
    first = data[: data.index(expected) + len(expected)]
    assert data.startswith(first + first), data
    assert data.count(b"HTTP/1.1 ") == 3 and [s[RAW_TARGET] for s, _ in app.seen] == [b"/x", b"/x", b"/last"]
    assert b"\r\nconnection: close\r\n" in data[2 * len(first) :].split(b"\r\n\r\n")[0] + b"\r\n"


@pytest.mark.parametrize("bad", [b"a\r\nset-cookie: stolen=1", b"a\nb", b"a\rb", b"a\0b"])
def test_a_header_that_would_break_the_framing_never_reaches_the_wire(run: Run, bad: bytes) -> None:
    app = Recorder(response(200, [(b"x-a", bad), (b"content-length", b"0")]))

    async def scenario() -> bytes:
        async with serving(app) as (_, port):
            return await exchange(port, [b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"])

    data = run(scenario())
    assert data.startswith(b"HTTP/1.1 500 ") and b"stolen" not in data and bad not in data


def test_100_continue_is_sent_only_when_the_app_reads_the_body(run: Run) -> None:
    class EarlyNo:
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if scope["path"] == "/read":
                await Recorder()(scope, receive, send)
                return
            for message in response(401, [(b"content-length", b"0")]):
                await send(message)

    async def ask(path: str) -> bytes:
        async with serving(EarlyNo()) as (_, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                f"PUT {path} HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n".encode()
            )
            first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            if first.startswith(b"HTTP/1.1 100"):
                writer.write(b"abc")
            data = first + await asyncio.wait_for(reader.read(), 5)
            writer.close()
            return data

    read, refused = run(ask("/read")), run(ask("/no"))
    assert read.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK") and read.endswith(b"ok")
    assert refused.startswith(b"HTTP/1.1 401") and b" 100 " not in refused


def test_an_answer_given_before_the_body_is_read_reaches_the_client_before_the_fin(run: Run) -> None:
    """An early refusal (a 401 to a stranger's upload, say) is written, then the write side is shut
    and the rest of the body never read: the answer must be on the wire before the FIN, whichever way
    gateway.outbox sends."""

    async def refuse(scope: Scope, receive: Receive, send: Send) -> None:
        for message in response(401, [(b"content-length", b"6")], b"denied"):
            await send(message)

    async def scenario() -> bytes:
        async with serving(refuse) as (_, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 1000000\r\n\r\n" + b"u" * 1000)
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 10)  # until the FIN
            writer.close()
            return answer

    answer = run(scenario())
    assert answer.startswith(b"HTTP/1.1 401") and answer.endswith(b"denied"), answer


def test_a_body_the_app_does_not_read_is_paused_not_buffered(run: Run) -> None:
    class Slow:
        def __init__(self) -> None:
            self.go = asyncio.Event()
            self.total = 0
            self.held = 0

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            await self.go.wait()
            exchange = receive.__self__  # type: ignore[attr-defined]
            self.held = exchange.size
            more = True
            while more:
                message = await receive()
                self.total += len(message.get("body", b""))
                more = message.get("more_body", False)
            for message in response(200, [(b"content-length", b"0")]):
                await send(message)

    size = 32 << 20

    async def scenario() -> Slow:
        app = Slow()
        async with serving(app) as (_, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                f"PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n".encode()
            )

            async def upload() -> None:
                block = b"u" * (1 << 20)
                for _ in range(size >> 20):
                    writer.write(block)
                    await writer.drain()

            sending = asyncio.get_running_loop().create_task(upload())
            await asyncio.sleep(0.5)  # the app is not reading: the server must pause, not hold 32 MiB
            app.go.set()
            await sending
            assert (await asyncio.wait_for(reader.read(), 10)).startswith(b"HTTP/1.1 200")
            writer.close()
        return app

    app = run(scenario())
    assert app.total == size
    assert app.held <= HIGH_WATER + (1 << 20), app.held


def test_a_client_that_leaves_is_seen_by_the_app(run: Run) -> None:
    async def scenario() -> Message:
        seen: asyncio.Future[Message] = asyncio.get_running_loop().create_future()

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            await receive()  # the (empty) body
            seen.set_result(await receive())  # then nothing until the client is gone

        async with serving(app) as (_, port):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.1)
            writer.close()
            return await asyncio.wait_for(seen, 5)

    assert run(scenario()) == {"type": "http.disconnect"}


def test_a_graceful_stop_finishes_what_runs_and_cancels_what_outlives_it(run: Run) -> None:
    async def scenario() -> tuple[bytes, bytes, bool]:
        cancelled = asyncio.Event()

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            try:
                await asyncio.sleep(0.3 if scope["path"] == "/short" else 30)
            except asyncio.CancelledError:
                cancelled.set()
                raise
            for message in response(200, [(b"content-length", b"2")], b"ok"):
                await send(message)

        sock = socket.create_server(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        server = Server(Site(app, Limits(), 5.0, date_header=False))
        task = asyncio.get_running_loop().create_task(server.serve(sock))
        short = asyncio.get_running_loop().create_task(
            exchange(port, [b"GET /short HTTP/1.1\r\nHost: h\r\n\r\n"])
        )
        long = asyncio.get_running_loop().create_task(
            exchange(port, [b"GET /long HTTP/1.1\r\nHost: h\r\n\r\n"])
        )
        await asyncio.sleep(0.1)
        server.stop(1.0)
        await asyncio.wait_for(task, 5)
        sock.close()
        return await short, await long, cancelled.is_set()

    short, long, cancelled = run(scenario())
    assert short.startswith(b"HTTP/1.1 200") and b"connection: close" in short and short.endswith(b"ok")
    assert long == b"" and cancelled


def test_pipelined_requests_beyond_the_cap_are_refused_not_held(run: Run) -> None:
    """One write can carry hundreds of small heads; at most MAX_PIPELINED wait behind the running
    one, the rest is refused (audited) and the connection closes after the answers it owes."""

    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        await asyncio.sleep(0.05)
        for message in response(200, [(b"content-length", b"2")], b"ok"):
            await send(message)

    async def scenario() -> bytes:
        async with serving(slow) as (_, port):
            return await exchange(port, [b"GET / HTTP/1.1\r\nHost: h\r\n\r\n" * 500])

    data = run(scenario())
    assert data.count(b"HTTP/1.1 200 OK") == MAX_PIPELINED + 1, data.count(b"HTTP/1.1 200 OK")
    assert b"HTTP/1.1 400" not in data  # nothing is written into the answers owed
