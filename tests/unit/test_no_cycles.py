"""A finished request leaves no reference cycle behind: everything it held is freed when it ends.

A refused request's error kept a traceback whose frames held the flow, which held the error; only the
garbage collector could free that cycle, and with it the inspected body the frames still referenced,
after the inspection budget had already given those bytes back. The gateway collects young objects
rarely (``gateway.app.YOUNG_COLLECTION_THRESHOLD``), so such cycles would hold memory for hundreds of
requests. Each refusal kind here runs through the whole pipeline with the collector off; afterwards
the collector must find nothing. On uvloop, as the gateway runs: asyncio's own selector transports
hold a bound method of themselves, a cycle of the standard library's that uvloop's do not have.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import uvloop
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import audit
from gateway.app import ProxyApp
from gateway.http1 import Server, Site
from gateway.pipeline import handle
from gateway.settings import Limits, build_config, token_hash
from gateway.types import Message, Receive, Scope, Send

TOKEN = "tok-0123456789abcdef"
CONFIG = build_config(
    {
        "upstream": {"url": "http://127.0.0.1:9"},
        "keys": {"read": {"value": "the-proget-key-0123"}},
        "native_api": {"allow": ["Feeds_GetFeeds"]},
        "clients": [
            {
                "name": "ci",
                "tokens": ["sha256:" + token_hash(TOKEN)],
                "rules": [{"key": "read", "paths": ["/api/json/**", "/nuget/**"]}],
            }
        ],
    },
    env={},
)
BEARER = (b"authorization", f"Bearer {TOKEN}".encode())
BIG = b"a" * 200_000

# (method, target, headers, body): each one refused at a different stage
REFUSALS: list[tuple[str, bytes, list[tuple[bytes, bytes]], bytes]] = [
    ("POST", b"/api/json/Feeds_GetFeeds", [BEARER, (b"content-type", b"application/json")],
     b'{"API_Key":"another-token-0123","x":"' + BIG + b'"}'),  # ambiguous, found in the body
    ("POST", b"/api/json/Feeds_DeleteFeed", [BEARER, (b"content-type", b"application/json")],
     b'{"x":"' + BIG + b'"}'),  # Native API method not on the allowlist
    ("GET", b"/npm/feed/x", [BEARER], b""),  # no rule for this path
    ("GET", b"/api/../x", [BEARER], b""),  # not canonical
    ("GET", b"/nuget/feed/x", [], b""),  # no credential
    ("GET", b"/nuget/feed/x", [(b"authorization", b"Bearer unknown-token-0123")], b""),
    ("GET", b"/nuget/feed/x", [BEARER, (b"content-length", b"1"), (b"transfer-encoding", b"chunked")], b""),
]  # fmt: skip


def _scope(method: str, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> dict[str, Any]:
    path, _, query = target.partition(b"?")
    length = [(b"content-length", str(len(body)).encode())] if body else []
    return {
        "type": "http",
        "method": method,
        "headers": [(b"host", b"gw.example"), *headers, *length],
        "path": path.decode(),
        "raw_path": path,
        "query_string": query,
        "client": ("127.0.0.1", 40000),
        "scheme": "http",
    }


async def _run(
    app: ProxyApp, method: str, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes
) -> int:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await handle(_scope(method, target, headers, body), receive, send, app.runtime)
    return int(sent[0]["status"])


async def _left_behind(warm: Callable[[], Awaitable[object]], run: Callable[[], Awaitable[object]]) -> int:
    """What the collector finds after ``run``, with the collector off while it runs; ``warm`` first
    lets caches and lazily built objects settle."""
    await warm()
    gc.collect()
    gc.disable()
    try:
        await run()
        return gc.collect()
    finally:
        gc.enable()


def _on_uvloop(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run ``main`` on uvloop, as the gateway runs, with the audit lines kept off the test's output."""
    audit.configure(io.StringIO())
    try:
        return uvloop.run(main())
    finally:
        audit.configure()


@contextlib.asynccontextmanager
async def _proxy_to(
    upstream: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[ProxyApp]:
    """The proxy app with its upstream client pointed at a loopback ProGet served by ``upstream``."""
    server = await asyncio.start_server(upstream, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = build_config(
        {**CONFIG.settings.model_dump(mode="json", exclude={"keys"}),
         "keys": {"read": {"value": "the-proget-key-0123"}},
         "upstream": {"url": f"http://127.0.0.1:{port}"}},
        env={},
    )  # fmt: skip
    app = ProxyApp(config)
    await app.runtime.upstream.start()
    try:
        yield app
    finally:
        await app.runtime.upstream.close()
        server.close()


@settings(max_examples=25, deadline=None)
@given(picks=st.lists(st.sampled_from(range(len(REFUSALS))), min_size=1, max_size=6))
def test_refused_requests_leave_nothing_for_the_collector(picks: list[int]) -> None:
    app = ProxyApp(CONFIG)

    async def refuse(rounds: int) -> None:
        statuses = [await _run(app, *REFUSALS[i]) for i in picks * rounds]
        assert all(400 <= status < 500 for status in statuses), statuses

    async def main() -> int:
        return await _left_behind(lambda: refuse(1), lambda: refuse(3))

    assert _on_uvloop(main) == 0, "a finished request left a reference cycle"


ANSWER = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


async def _upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A loopback ProGet stand-in: every request head gets a small JSON answer on a kept-alive connection."""
    try:
        while await reader.readuntil(b"\r\n\r\n"):
            writer.write(ANSWER)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


async def _silent_upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A ProGet that takes an upload and never answers: the client leaves first."""
    try:
        while await reader.read(65536):
            pass
    except ConnectionError:
        pass
    writer.close()


def test_forwarded_requests_leave_nothing_for_the_collector() -> None:
    get = ("GET", b"/nuget/feed/x?a=1", [BEARER], b"")

    async def forward(app: ProxyApp, times: int) -> None:
        assert [await _run(app, *get) for _ in range(times)] == [200] * times

    async def main() -> int:
        async with _proxy_to(_upstream) as app:
            return await _left_behind(lambda: forward(app, 1), lambda: forward(app, 20))

    assert _on_uvloop(main) == 0, "a forwarded request left a reference cycle"


async def _abandon_upload(app: ProxyApp, pause: float) -> int:
    """A streamed upload whose client sends part of the body and leaves; ProGet's status, if it answered."""
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": b"x" * 100_000, "more_body": True},
        {"type": "http.disconnect"},
    ]
    statuses: list[int] = []

    async def receive() -> Message:
        await asyncio.sleep(pause)
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    headers = [BEARER, (b"content-type", b"application/octet-stream"), (b"content-length", b"200000")]
    await handle(_scope("PUT", b"/nuget/feed/package", headers, b""), receive, send, app.runtime)
    await asyncio.sleep(0.05)  # the body relay's task ends and its callbacks run
    return statuses[0] if statuses else 0


def test_an_upload_the_client_abandons_leaves_nothing_for_the_collector() -> None:
    """The client sends part of a streamed upload and leaves: the body relay fails with the client's
    departure, which the connection to ProGet keeps as its error; neither may hold the request's
    frames (and the chunk in them) in a cycle."""

    async def abandon(app: ProxyApp, times: int) -> None:
        for _ in range(times):
            await _abandon_upload(app, 0)

    async def main() -> int:
        async with _proxy_to(_silent_upstream) as app:
            return await _left_behind(lambda: abandon(app, 1), lambda: abandon(app, 5))

    assert _on_uvloop(main) == 0, "an abandoned upload left a reference cycle"


def test_an_upload_abandoned_after_proget_answered_leaves_nothing_for_the_collector() -> None:
    """ProGet answers at the head; the client then leaves mid-body. The body relay fails on its own
    task, after the request is done: its error must not hold the relay's frames in a cycle."""

    async def abandon(app: ProxyApp, times: int) -> None:
        assert [await _abandon_upload(app, 0.01) for _ in range(times)] == [200] * times

    async def main() -> int:
        async with _proxy_to(_upstream) as app:
            return await _left_behind(lambda: abandon(app, 1), lambda: abandon(app, 3))

    assert _on_uvloop(main) == 0, "an upload abandoned after the answer left a reference cycle"


async def _answer_after_body(scope: Scope, receive: Receive, send: Send) -> None:
    """A plain app: reads the whole body, then answers."""
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok", "more_body": False})


CLIENTS = [
    b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n",  # kept alive, then the client closes
    b"GET /a HTTP/1.1\r\nhost: x\r\n\r\nGET /b HTTP/1.1\r\nhost: x\r\n\r\n",  # pipelined
    b"PUT /u HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000\r\n\r\n" + b"x" * 200_000,  # abandoned upload
    b"GET /a HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel",  # abandoned chunked body
]


@settings(max_examples=10, deadline=None)
@given(picks=st.lists(st.sampled_from(range(len(CLIENTS))), min_size=1, max_size=5))
def test_connections_that_end_leave_nothing_for_the_collector(picks: list[int]) -> None:
    """The server's side: a connection whose client leaves (idle, mid-pipeline, mid-upload) is freed
    when it ends; its parser and its exchanges held it in cycles before."""

    async def client(port: int, sent: bytes) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(sent)
        await writer.drain()
        if sent.startswith(b"GET") and b"chunked" not in sent:
            await reader.readuntil(b"ok")
        writer.close()
        await writer.wait_closed()

    async def clients(port: int, picked: list[int]) -> None:
        for i in picked:
            await client(port, CLIENTS[i])
        await asyncio.sleep(0.1)  # the server sees every close and its tasks end

    async def main() -> int:
        sock = socket.create_server(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        server = Server(Site(_answer_after_body, Limits(), 5.0, date_header=False))
        serving = asyncio.create_task(server.serve(sock))
        try:
            return await _left_behind(lambda: clients(port, [0]), lambda: clients(port, picks))
        finally:
            server.stop(0)
            await serving

    assert uvloop.run(main()) == 0, "a connection left a reference cycle"
