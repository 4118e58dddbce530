"""A recording ProGet STAND-IN for the demo and the tests. It is not ProGet.

It answers the handful of ProGet endpoints the gateway's tests and demo touch, records every request
exactly as it arrived (path bytes, headers, body size and hash, the credentials ProGet would read),
and accepts only the keys it was given, like a ProGet whose Anonymous user has no rights
(``anonymous="none"``) or, like a fresh ProGet, every request (``anonymous="admin"``).

It reads credentials with the standard library (``urllib.parse``, ``json``), independently of the
gateway's own scanners, so a scanner bug cannot hide itself in the tests.

Run it alone: ``python -m gateway.standin --port 0 --port-file /tmp/port``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import gzip
import hashlib
import json
import socket
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl

import uvicorn

from gateway.canonical import FEED_PREFIXES
from gateway.types import Receive, Scope, Send

BODY_HEAD = 64 * 1024
# 1 MiB of deterministic download content, without a shorter period: a byte written at the wrong
# offset (a buffer reused too early, a piece sent twice) changes what the reader hashes.
_BLOCK = hashlib.shake_256(b"proget-stand-in download").digest(1 << 20)
LABEL = (b"x-standin", b"proget-stand-in (not ProGet)")


@dataclass
class Recorded:
    """One request as the stand-in received it. Header names are lowercased; values as sent."""

    method: str
    raw_path: str
    query: str
    headers: list[tuple[str, str]]
    body_size: int = 0
    body_sha256: str = ""
    body_head: bytes = b""
    credentials: list[tuple[str, str]] = field(default_factory=list)

    def header(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n == name.lower()]


def read_credentials(rec: Recorded, content_type: str) -> list[tuple[str, str]]:
    """Every key ProGet could read from this request, and where it was."""
    found: list[tuple[str, str]] = []
    for name, value in rec.headers:
        if name in ("x-apikey", "x-nuget-apikey"):
            found.append((f"header:{name}", value))
        elif name == "authorization":
            found.append(("header:authorization", _authorization_secret(value)))
    for name, value in parse_qsl(rec.query, keep_blank_values=True):
        if name.lower() in ("key", "api_key"):
            found.append((f"query:{name.lower()}", value))
    media = content_type.split(";", 1)[0].strip().lower()
    body = rec.body_head
    prefix = rec.raw_path.split("/")[1].lower()
    if prefix in FEED_PREFIXES and prefix not in ("endpoints", "upack"):
        return found  # feed endpoints take package content in bodies, never a key (proget-facts.md §4)
    if media == "application/x-www-form-urlencoded":
        for name, value in parse_qsl(body.decode("latin-1"), keep_blank_values=True):
            if name.lower() in ("key", "api_key"):
                found.append(("form:key", value))
    elif "json" in media and body:
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            found += [("json:API_Key", str(v)) for k, v in doc.items() if k.lower() == "api_key"]
    return found


def _authorization_secret(value: str) -> str:
    scheme, _, rest = value.partition(" ")
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(rest).decode("utf-8", "replace").partition(":")[2]
        except (binascii.Error, ValueError):
            return value
    return rest or value


Handler = Callable[["Exchange"], Awaitable[None]]


@dataclass
class Exchange:
    """One request being served: its record plus the ASGI channels."""

    scope: Scope
    receive: Receive
    send: Send
    rec: Recorded
    standin: Standin
    params: dict[str, str]

    def origin(self) -> str:
        host = self.rec.header("x-forwarded-host") or self.rec.header("host")
        proto = self.rec.header("x-forwarded-proto") or ["http"]
        return f"{proto[0]}://{host[0] if host else 'localhost'}"

    async def read_body(self) -> bool:
        """Read the request body, hashing it; False if the client (the gateway) went away."""
        digest = hashlib.sha256()
        head = bytearray()
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                return False
            chunk = message.get("body", b"")
            digest.update(chunk)
            self.rec.body_size += len(chunk)
            if len(head) < BODY_HEAD:
                head += chunk[: BODY_HEAD - len(head)]
            if not message.get("more_body", False):
                break
        self.rec.body_sha256 = digest.hexdigest()
        self.rec.body_head = bytes(head)
        return True

    async def reply(
        self, status: int, body: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        out = [LABEL, *(headers or [])]
        if not any(n == b"content-length" for n, _ in out):
            out.append((b"content-length", str(len(body)).encode()))
        await self.send({"type": "http.response.start", "status": status, "headers": out})
        await self.send({"type": "http.response.body", "body": body})

    async def json(self, status: int, doc: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        body = json.dumps(doc, indent=1).encode() + b"\n"
        await self.reply(status, body, [(b"content-type", b"application/json"), *(headers or [])])


class Standin:
    """The ASGI app. ``keys`` maps each accepted ProGet key to a role name shown in answers."""

    def __init__(self, keys: dict[str, str], anonymous: Literal["admin", "none"] = "admin") -> None:
        self.keys = dict(keys)
        self.anonymous = anonymous
        self.record = True  # False for long benchmark runs: nothing is kept
        self.requests: list[Recorded] = []
        self.cancelled = 0  # requests whose client (the gateway) left before the exchange finished
        self.completed = 0
        self.in_flight = 0  # requests being served right now (not /health)
        self.peak_in_flight = 0  # the most served at once since the last clear(): ProGet's load
        # ProGet's /health: "2026" answers plain text on /health, "2025" JSON; /health/json is JSON on both.
        # Components named in health_failing ("database", "license", "service", ...) report "Error" (→ 500).
        self.health_format: Literal["2025", "2026"] = "2026"
        self.health_failing: set[str] = set()
        self.version = "2026.1.0"

    def clear(self) -> None:
        self.requests.clear()
        self.peak_in_flight = self.in_flight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        raw_path = scope.get("raw_path") or scope["path"].encode()
        rec = Recorded(
            method=scope["method"],
            raw_path=raw_path.decode("latin-1"),
            query=scope.get("query_string", b"").decode("latin-1"),
            headers=[(n.decode("latin-1").lower(), v.decode("latin-1")) for n, v in scope["headers"]],
        )
        counted = int(not rec.raw_path.startswith("/health"))
        if self.record and counted:
            self.requests.append(rec)
        self.in_flight += counted
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            await self._serve(scope, receive, send, rec)
        finally:
            self.in_flight -= counted

    async def _serve(self, scope: Scope, receive: Receive, send: Send, rec: Recorded) -> None:
        handler, params = route(rec.method, rec.raw_path)
        ex = Exchange(scope, receive, send, rec, self, params)
        if handler not in STREAMING_HANDLERS and not await ex.read_body():
            self.cancelled += 1
            return
        rec.credentials = read_credentials(rec, ",".join(rec.header("content-type")))
        if handler not in (health, health_json) and not await self.authorized(ex):
            return
        await handler(ex)
        self.completed += 1

    async def authorized(self, ex: Exchange) -> bool:
        """ProGet's view: a known key is a role; no key is Anonymous; an unknown key is refused."""
        values = {v for _, v in ex.rec.credentials}
        if not values:
            if self.anonymous == "admin":
                return True
            await ex.reply(401, b"ProGet stand-in: anonymous access denied\n", [_PROGET_CHALLENGE])
            return False
        if all(v in self.keys for v in values):
            return True
        await ex.reply(403, b"ProGet stand-in: invalid API key\n")
        return False


_PROGET_CHALLENGE = (b"www-authenticate", b'Basic realm="ProGet"')


# --- endpoints -----------------------------------------------------------------------------------


HEALTH_COMPONENTS = ("database", "license", "service")


def health_doc(standin: Standin) -> dict[str, Any]:
    """ProGet's health JSON (ProGetHealthInfo): each status "OK" or "Error"."""
    failing = standin.health_failing
    doc: dict[str, Any] = {"applicationName": "ProGet", "versionNumber": standin.version}
    doc["releaseNumber"] = standin.version
    doc["extensionsInstalled"] = {}
    for component in HEALTH_COMPONENTS:
        doc[f"{component}Status"] = "Error" if component in failing else "OK"
    doc["databaseStatusDetails"] = doc["licenseStatusDetail"] = doc["serviceStatusDetail"] = None
    doc["replicationStatus"] = {
        "serverStatus": "Error" if "replication" in failing else "OK",
        "serverError": None,
        "clientStatus": "OK",
        "clientError": None,
    }
    return doc


async def health(ex: Exchange) -> None:
    status = 500 if ex.standin.health_failing else 200
    if ex.standin.health_format == "2025":
        await ex.json(status, health_doc(ex.standin))
    else:
        text = b"OK" if status == 200 else b"ProGet: " + ",".join(sorted(ex.standin.health_failing)).encode()
        await ex.reply(status, text, [(b"content-type", b"text/plain")])


async def health_json(ex: Exchange) -> None:
    await ex.json(500 if ex.standin.health_failing else 200, health_doc(ex.standin))


async def echo(ex: Exchange) -> None:
    """What "ProGet" received, for the demo: method, path, query, headers and the key it would use."""
    rec = ex.rec
    await ex.json(
        200,
        {
            "stand_in": "this is a ProGet stand-in, not ProGet",
            "method": rec.method,
            "path": rec.raw_path,
            "query": rec.query,
            "headers": dict(rec.headers),
            "body_size": rec.body_size,
            "api_key_role": sorted({ex.standin.keys.get(v, "unknown") for _, v in rec.credentials}),
        },
    )


async def echo_key(ex: Exchange) -> None:
    """A misbehaving upstream that repeats the key in a response header."""
    key = next((v for _, v in ex.rec.credentials), "").encode()
    echoes = [
        (b"x-echo", key),
        (b"x-echo-upper", key.upper()),
        (b"x-echo-b64", base64.b64encode(key)),
        (b"x-echo-pct", b"".join(b"%%%02X" % c for c in key)),
        (b"x-echo-hex", key.hex().upper().encode()),
        (b"x-echo-b64-aligned", base64.urlsafe_b64encode(b"user=" + key + b";")),
        (b"x-echo-json", b'{"k":"' + b"".join(b"\\u%04x" % c for c in key) + b'"}'),
    ]
    await ex.reply(200, b"ok\n", [*echoes, (b"x-other", b"fine")])


async def status(ex: Exchange) -> None:
    code = int(ex.params["code"])
    headers: list[tuple[bytes, bytes]] = [(b"set-cookie", b"ProGetSession=abc; HttpOnly")]
    if code == 401:
        headers.append(_PROGET_CHALLENGE)
    if 300 <= code < 400:
        headers.append((b"location", f"http://{ex.rec.header('host')[0]}/somewhere?x=1".encode()))
    body = b"" if code in (204, 304) else f"status {code}\n".encode()
    await ex.reply(code, body, headers)


async def slow(ex: Exchange) -> None:
    await asyncio.sleep(float(_query(ex).get("seconds", "5")))
    await ex.reply(200, b"slow\n")


async def abort(ex: Exchange) -> None:
    """Promise ``size`` bytes, send ``after``, then break the connection."""
    q = _query(ex)
    size, after = int(q.get("size", "1000000")), int(q.get("after", "1000"))
    start = {"type": "http.response.start", "status": 200, "headers": [LABEL, _length(size)]}
    await ex.send(start)
    await ex.send({"type": "http.response.body", "body": _BLOCK[:after], "more_body": True})
    raise ConnectionAbortedError("stand-in aborts the response on purpose")


async def sink(ex: Exchange) -> None:
    """Read an upload slowly; count the exchange as cancelled if the sender leaves midway."""
    while True:
        message = await ex.receive()
        if message["type"] == "http.disconnect":
            ex.standin.cancelled += 1
            return
        ex.rec.body_size += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    await ex.json(201, {"size": ex.rec.body_size})


async def stall(ex: Exchange) -> None:
    """Take no body at all for ``seconds`` (a ProGet that stopped reading an upload), then answer."""
    await asyncio.sleep(float(_query(ex).get("seconds", "5")))
    await ex.reply(200, b"stalled\n")


async def download_slow(ex: Exchange) -> None:
    """Stream ``size`` bytes slowly; count the exchange as cancelled if the reader leaves."""
    size = int(_query(ex).get("size", "50000000"))
    gone = asyncio.Event()

    async def watch() -> None:
        while (await ex.receive())["type"] != "http.disconnect":
            pass
        gone.set()

    watcher = asyncio.create_task(watch())
    await ex.send({"type": "http.response.start", "status": 200, "headers": [LABEL, _length(size)]})
    sent = 0
    try:
        while sent < size:
            if gone.is_set():
                ex.standin.cancelled += 1
                return
            chunk = _BLOCK[: min(65536, size - sent)]
            await ex.send({"type": "http.response.body", "body": chunk, "more_body": True})
            sent += len(chunk)
            await asyncio.sleep(0.01)
        await ex.send({"type": "http.response.body", "body": b""})
    finally:
        watcher.cancel()


async def native(ex: Exchange) -> None:
    method = ex.params["method"]
    if method.lower() == "feeds_getfeeds":
        await ex.json(200, [{"Feed_Id": 1, "Feed_Name": "internal", "FeedType_Name": "NuGet"}])
    else:
        await ex.json(200, {"stand_in_native_method": method})


async def feeds_list(ex: Exchange) -> None:
    await ex.json(200, [{"name": "internal", "feedType": "nuget"}])


async def download(ex: Exchange) -> None:
    """A package download with Range, ETag/304, HEAD, chunked and gzip variants."""
    q = _query(ex)
    size = int(q.get("size", "1000"))
    etag = f'"standin-{size}"'.encode()
    headers = [(b"etag", etag), (b"accept-ranges", b"bytes"), (b"content-type", b"application/zip")]
    if ex.rec.header("if-none-match") == [etag.decode()]:
        await ex.reply(304, b"", [(b"etag", etag), (b"content-length", b"0")])
        return
    start, end, code = 0, size - 1, 200
    ranged = ex.rec.header("range")
    if ranged and ranged[0].startswith("bytes="):
        first, _, last = ranged[0][6:].partition("-")
        start, end, code = int(first), min(int(last or end), size - 1), 206
        headers.append((b"content-range", f"bytes {start}-{end}/{size}".encode()))
    if q.get("gzip") == "1" and "gzip" in ",".join(ex.rec.header("accept-encoding")):
        body = gzip.compress(_content(start, end + 1))
        await ex.reply(code, body, [*headers, (b"content-encoding", b"gzip")])
        return
    length = end + 1 - start
    chunked = q.get("chunked") == "1"
    await ex.send(
        {
            "type": "http.response.start",
            "status": code,
            "headers": [LABEL, *headers, *([] if chunked else [_length(length)])],
        }
    )
    if ex.rec.method == "HEAD":
        await ex.send({"type": "http.response.body", "body": b""})
        return
    for offset in range(start, end + 1, len(_BLOCK)):
        chunk = _content(offset, min(offset + len(_BLOCK), end + 1))
        await ex.send({"type": "http.response.body", "body": chunk, "more_body": True})
    await ex.send({"type": "http.response.body", "body": b""})


def _content(start: int, stop: int) -> bytes:
    """Bytes [start, stop) of the endless repetition of _BLOCK."""
    out = bytearray()
    pos = start
    while pos < stop:
        i = pos % len(_BLOCK)
        take = min(len(_BLOCK) - i, stop - pos)
        out += _BLOCK[i : i + take]
        pos += take
    return bytes(out)


async def upload(ex: Exchange) -> None:
    await ex.json(201, {"size": ex.rec.body_size, "sha256": ex.rec.body_sha256})


async def docker_base(ex: Exchange) -> None:
    await ex.json(200, {}, [(b"docker-distribution-api-version", b"registry/2.0")])


async def nuget_index(ex: Exchange) -> None:
    """ProGet builds absolute URLs from the Host it is given: they must point at the gateway."""
    base = f"{ex.origin()}/nuget/{ex.params['feed']}"
    resources = [{"@id": f"{base}/v3/package/", "@type": "PackageBaseAddress/3.0.0"}]
    await ex.json(200, {"version": "3.0.0", "resources": resources})


async def npm_packument(ex: Exchange) -> None:
    feed, name = ex.params["feed"], ex.params["name"]
    tarball = f"{ex.origin()}/npm/{feed}/{name}/-/{name.rpartition('%2f')[2]}-1.0.0.tgz"
    await ex.json(200, {"name": name, "versions": {"1.0.0": {"dist": {"tarball": tarball}}}})


async def feed_file(ex: Exchange) -> None:
    """Any other feed path (tarballs, manifests, index pages): a small labelled file."""
    body = f"stand-in feed file {ex.rec.raw_path}\n".encode()
    await ex.reply(200, b"" if ex.rec.method == "HEAD" else body, [_length(len(body))])


async def not_found(ex: Exchange) -> None:
    await ex.reply(404, b"ProGet stand-in: not found\n")


def _query(ex: Exchange) -> dict[str, str]:
    return dict(parse_qsl(ex.rec.query))


def _length(size: int) -> tuple[bytes, bytes]:
    return (b"content-length", str(size).encode())


STREAMING_HANDLERS = frozenset({sink, download_slow, stall})
_EXACT: dict[str, Handler] = {
    "/health": health,
    "/health/json": health_json,
    "/__standin/echo": echo,
    "/__standin/echo-key": echo_key,
    "/__standin/slow": slow,
    "/__standin/abort": abort,
    "/__standin/sink": sink,
    "/__standin/stall": stall,
    "/__standin/download-slow": download_slow,
    "/api/management/feeds/list": feeds_list,
    "/v2/": docker_base,
}


def route(method: str, path: str) -> tuple[Handler, dict[str, str]]:
    """Pick the endpoint for a raw path."""
    if path in _EXACT:
        return _EXACT[path], {}
    parts = path.split("/")
    if path.startswith("/__standin/status/") and len(parts) == 4 and parts[3].isdigit():
        return status, {"code": parts[3]}
    if path.lower().startswith("/api/json/") and (len(parts) == 4 or parts[4:] == [""]):
        return native, {"method": parts[3]}
    if path.startswith("/api/packages/") and len(parts) == 5:
        action = {"download": download, "upload": upload}.get(parts[4])
        if action is not None:
            return action, {"feed": parts[3]}
    if path.startswith("/nuget/") and path.endswith("/v3/index.json") and len(parts) == 5:
        return nuget_index, {"feed": parts[2]}
    if path.startswith("/npm/") and len(parts) == 4:
        return npm_packument, {"feed": parts[2], "name": parts[3]}
    if parts[1] in FEED_PREFIXES and len(parts) > 3:
        return feed_file, {}
    return not_found, {}


# --- running it ------------------------------------------------------------------------------------


class StandinServer:
    """Run a :class:`Standin` under uvicorn in a background thread on 127.0.0.1 (a free port)."""

    def __init__(self, standin: Standin, port: int = 0) -> None:
        self.standin = standin
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", port))
        self.port = int(self._sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            standin, log_level="warning", http="httptools", lifespan="on", server_header=False
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    def __enter__(self) -> StandinServer:
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the ProGet stand-in failed to start")
            self._thread.join(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        self._sock.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.standin",
        description="A recording ProGet STAND-IN (not ProGet) on 127.0.0.1, to try `proget-gateway serve` "
        "with your own config before a ProGet exists: point upstream.url at it. GET /__standin/echo "
        "answers with what it received.",
        allow_abbrev=False,
    )
    parser.add_argument(
        "--port", type=int, default=0, help="port on 127.0.0.1 (default 0: a free one, printed)"
    )
    parser.add_argument("--port-file", type=Path, help="also write the port to this file (for scripts)")
    parser.add_argument(
        "--key",
        action="append",
        default=[],
        help="a ProGet API key it accepts (repeatable): the values of your config's keys; a request with any "
        "other key is refused (403), as ProGet would",
    )
    args = parser.parse_args(argv)
    standin = Standin(keys={k: f"key{i}" for i, k in enumerate(args.key)})
    standin.record = False
    with StandinServer(standin, args.port) as server:
        if args.port_file:
            args.port_file.write_text(str(server.port))
        print(f"ProGet stand-in (not ProGet) on {server.url}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
