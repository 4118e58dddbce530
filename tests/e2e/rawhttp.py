"""A deliberately dumb HTTP/1.1 client: sends exactly the bytes it is given, so tests can send request
targets and framings that every real client library would normalize or refuse to produce."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass
class RawResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]

    def json(self) -> Any:
        return json.loads(self.body)


def send_raw(base_url: str, data: bytes, timeout: float = 10.0) -> RawResponse:
    """Send ``data`` as is on a fresh connection; read one response (until close or Content-Length)."""
    parts = urlsplit(base_url)
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=timeout) as sock:
        sock.sendall(data)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = [
            (n.strip(), v.strip()) for n, v in (line.split(":", 1) for line in lines[1:] if ":" in line)
        ]
        length = next((int(v) for n, v in headers if n.lower() == "content-length"), None)
        while length is not None and len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        return RawResponse(status, headers, rest)


def request(
    base_url: str,
    method: str,
    target: str | bytes,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
) -> RawResponse:
    """One request with ``target`` written verbatim on the request line."""
    t = target.encode("latin-1") if isinstance(target, str) else target
    host = urlsplit(base_url).netloc
    lines = [method.encode() + b" " + t + b" HTTP/1.1", f"Host: {host}".encode(), b"Connection: close"]
    lines += [f"{n}: {v}".encode("latin-1") for n, v in headers or []]
    if body:
        lines.append(f"Content-Length: {len(body)}".encode())
    return send_raw(base_url, b"\r\n".join(lines) + b"\r\n\r\n" + body)
