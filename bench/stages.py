"""CPU cost of each pipeline stage on the bench's small request, in µs (timeit, one process, no I/O).

``.venv/bin/python bench/stages.py`` — the figures behind "Where the checks' time goes" in
bench/README.md. The bench config, the bench token in ``Authorization: Bearer``, ``GET /api/small``
and nginx's five answer headers, called the way ``gateway.pipeline`` calls them.
"""

from __future__ import annotations

import tempfile
import timeit
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar, cast

from run import TOKEN, gateway_config, make_jwt

from gateway import audit, canonical, egress, framing, metrics, policy, rewrite
from gateway.audit import Flow
from gateway.credentials import body_kind, find_credentials
from gateway.identity import identify
from gateway.settings import load_config

T = TypeVar("T")
ANSWER = [
    (b"Server", b"nginx/1.22.1"),
    (b"Date", b"Sat, 05 Dec 2026 16:07:50 GMT"),
    (b"Content-Type", b"application/json"),
    (b"Content-Length", b"228"),
    (b"Connection", b"keep-alive"),
]


def main() -> None:
    config = load_config(gateway_config(Path(tempfile.mkdtemp()), 9, 8, make_jwt().jwks))
    headers = [(b"host", b"127.0.0.1:8"), (b"authorization", f"Bearer {TOKEN}".encode())]
    limits = config.settings.limits
    head = framing.check_head("GET", headers, limits)
    target = canonical.canonicalize(b"/api/small")
    kind = body_kind(target, head)
    creds = find_credentials(headers, target, None, kind, limits)
    identity = _complete(identify(creds, config, None))
    key = config.keys[policy.decide(identity.client, "GET", target, config).key]
    view = rewrite.client_view("127.0.0.1", "http", head, headers, config)
    request = rewrite.rewrite_request("GET", target, headers, head, creds, key, view, config, "0" * 16)
    secrets = egress.presented(headers)
    flow = Flow("0" * 16, "GET", "127.0.0.1", client="bench", decision="allow", status=200, bytes_out=228)
    flow.secrets = secrets
    stages: list[tuple[str, Callable[[], object]]] = [
        ("check_head", lambda: framing.check_head("GET", headers, limits)),
        ("canonicalize", lambda: canonical.canonicalize(b"/api/small")),
        ("presented (credential needles)", lambda: egress.presented(headers)),
        ("body_kind", lambda: body_kind(target, head)),
        ("find_credentials", lambda: find_credentials(headers, target, None, kind, limits)),
        ("identify (token)", lambda: _complete(identify(creds, config, None))),
        ("decide (policy)", lambda: policy.decide(identity.client, "GET", target, config)),
        ("client_view", lambda: rewrite.client_view("127.0.0.1", "http", head, headers, config)),
        (
            "rewrite_request",
            lambda: rewrite.rewrite_request("GET", target, headers, head, creds, key, view, config, "0" * 16),
        ),
        ("check_egress", lambda: egress.check_egress(request, secrets)),
        (
            "rewrite_response_headers",
            lambda: rewrite.rewrite_response_headers(
                ANSWER, key, 200, config.settings.upstream.url, "http://x"
            ),
        ),
        ("audit line (fields, redaction, JSON)", lambda: audit.event(flow)),
        ("metrics", lambda: metrics.observe(flow)),
    ]
    total = 0.0
    for name, call in stages:
        us = timeit.timeit(call, number=100_000) / 100_000 * 1e6
        total += us
        print(f"| {name} | {us:.2f} |")
    print(f"| **sum** | **{total:.1f}** |")


def _complete(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (a token lookup) without an event loop's cost."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    raise AssertionError("the stage suspended")


if __name__ == "__main__":
    main()
