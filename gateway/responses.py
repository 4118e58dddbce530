"""The one place a gateway error becomes a response: JSON ``{"error", "detail", "request_id"}``.

``X-Gateway-Error`` carries the same code, so a 403 made here is never mistaken for ProGet's. Two
forms exist because refusals happen at two depths: inside the ASGI app (``send_error``) and inside
the HTTP parser, before there is an app call at all (``error_response_bytes``).
"""

from __future__ import annotations

import json
from email.utils import formatdate
from http import HTTPStatus

from gateway.errors import GatewayError
from gateway.types import Send


def error_body(error: GatewayError, request_id: str) -> bytes:
    return json.dumps(
        {"error": error.code, "detail": error.detail, "request_id": request_id}, separators=(",", ":")
    ).encode()


def error_headers(error: GatewayError, request_id: str, length: int) -> list[tuple[bytes, bytes]]:
    return [
        (b"date", formatdate(usegmt=True).encode()),  # the proxy server adds none: ProGet's Date passes
        (b"content-type", b"application/json"),
        (b"content-length", str(length).encode()),
        (b"cache-control", b"no-store"),
        (b"x-gateway-error", error.code.encode()),
        (b"x-request-id", request_id.encode()),
        *error.headers(),
    ]


async def send_error(send: Send, error: GatewayError, request_id: str) -> None:
    body = error_body(error, request_id)
    headers = error_headers(error, request_id, len(body))
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def error_response_bytes(error: GatewayError, request_id: str) -> bytes:
    """A complete HTTP/1.1 response that also closes the connection (parser-level refusals)."""
    body = error_body(error, request_id)
    reason = HTTPStatus(error.status).phrase.encode()
    lines = [b"HTTP/1.1 %d %s" % (error.status, reason)]
    lines += [n + b": " + v for n, v in error_headers(error, request_id, len(body))]
    lines.append(b"connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body
