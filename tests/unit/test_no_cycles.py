"""A finished request leaves no reference cycle behind: everything it held is freed when it ends.

A refused request's error kept a traceback whose frames held the flow, which held the error; only the
garbage collector could free that cycle, and with it the inspected body the frames still referenced,
after the inspection budget had already given those bytes back. The gateway collects young objects
rarely (``gateway.app.YOUNG_COLLECTION_THRESHOLD``), so such cycles would hold memory for hundreds of
requests. Each refusal kind here runs through the whole pipeline with the collector off; afterwards
the collector must find nothing.
"""

from __future__ import annotations

import asyncio
import gc
import io
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import audit
from gateway.app import ProxyApp
from gateway.pipeline import handle
from gateway.settings import build_config, token_hash

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
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await handle(_scope(method, target, headers, body), receive, send, app.runtime)
    return int(sent[0]["status"])


@settings(max_examples=25, deadline=None)
@given(picks=st.lists(st.sampled_from(range(len(REFUSALS))), min_size=1, max_size=6))
def test_refused_requests_leave_nothing_for_the_collector(picks: list[int]) -> None:
    app = ProxyApp(CONFIG)

    async def main() -> int:
        for i in picks:  # first pass: caches and lazily built objects settle
            await _run(app, *REFUSALS[i])
        gc.collect()
        gc.disable()
        try:
            statuses = [await _run(app, *REFUSALS[i]) for i in picks * 3]
            assert all(400 <= status < 500 for status in statuses), statuses
            return gc.collect()
        finally:
            gc.enable()

    audit.configure(io.StringIO())
    try:
        assert asyncio.run(main()) == 0, "a finished request left a reference cycle"
    finally:
        audit.configure()


ANSWER = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


async def _upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A loopback ProGet stand-in: every request head gets a small JSON answer on a kept-alive connection."""
    try:
        while await reader.readuntil(b"\r\n\r\n"):
            writer.write(ANSWER)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


def test_forwarded_requests_leave_nothing_for_the_collector() -> None:
    async def main() -> int:
        server = await asyncio.start_server(_upstream, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        config = build_config(
            {**CONFIG.settings.model_dump(mode="json", exclude={"keys"}),
             "keys": {"read": {"value": "the-proget-key-0123"}},
             "upstream": {"url": f"http://127.0.0.1:{port}"}},
            env={},
        )  # fmt: skip
        app = ProxyApp(config)
        await app.startup()
        get = ("GET", b"/nuget/feed/x?a=1", [BEARER], b"")
        try:
            assert await _run(app, *get) == 200
            gc.collect()
            gc.disable()
            try:
                assert [await _run(app, *get) for _ in range(20)] == [200] * 20
                return gc.collect()
            finally:
                gc.enable()
        finally:
            await app.shutdown()
            server.close()

    audit.configure(io.StringIO())
    threshold = gc.get_threshold()
    try:
        assert asyncio.run(main()) == 0, "a forwarded request left a reference cycle"
    finally:
        audit.configure()
        gc.unfreeze()  # startup froze the test process's heap and raised the threshold: undone
        gc.set_threshold(*threshold)
