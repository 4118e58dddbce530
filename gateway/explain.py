"""Dry-run the pipeline's decision stages for one request: which client, which rule, which key name.

It runs the same functions as the proxy (canonical → credentials → identity → policy), so what it
says is what the gateway would do. It makes no network call and never prints a key or token.
"""

from __future__ import annotations

import asyncio

from gateway.canonical import Route, canonicalize
from gateway.credentials import BodyKind, find_credentials
from gateway.errors import GatewayError
from gateway.framing import check_head
from gateway.identity import identify
from gateway.policy import decide
from gateway.settings import Config


def explain(config: Config, method: str, target: bytes, token: str | None) -> tuple[list[str], bool]:
    """Return printable lines and whether the request would be forwarded."""
    lines: list[str] = []
    headers = [(b"host", b"gateway.invalid")]
    if token is not None:
        headers.append((b"authorization", b"Bearer " + token.encode("utf-8")))
    try:
        limits = config.settings.limits
        check_head(method, headers, limits)
        t = canonicalize(target, max_target_bytes=limits.max_target_bytes)
        route = t.route.value + (f", method {t.native_method}" if t.route is Route.NATIVE else "")
        route += f", feed {t.feed}" if t.feed else ""
        lines.append(f"request:  {method} {t.path}  ({route})")
        credentials = find_credentials(headers, t, None, BodyKind.STREAM, limits)
        identity = asyncio.run(identify(credentials, config))
        via = ",".join(credentials.sources) if identity.via == "token" else "no credential"
        lines.append(f"client:   {identity.client.name}  ({identity.via} via {via})")
        decision = decide(identity.client, method, t, config)
    except GatewayError as error:
        lines.append(f"refused:  {error.status} {error.code}: {error.detail}")
        return lines, False
    rule = identity.client.rules[decision.rule]
    lines.append(f"rule:     #{decision.rule} {rule.model_dump(exclude_none=True)}")
    lines.append(f"key:      {decision.key}  (sent to ProGet as X-ApiKey; value not shown)")
    lines.append("decision: allow")
    return lines, True
