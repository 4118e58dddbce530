"""Dry-run the pipeline's decision stages for one request: which client, which rule, which key name.

It runs the same functions as the proxy (canonical → credentials → identity → policy), so what it
says is what the gateway would do. Its only network call is fetching a JWT issuer's keys, to verify a
JWT as the proxy would; it never prints a key or token.
"""

from __future__ import annotations

import asyncio
import json

from gateway.canonical import Route, Target, canonicalize
from gateway.credentials import BodyKind, Credentials, find_credentials
from gateway.errors import GatewayError
from gateway.framing import check_head
from gateway.identity import Identity, identify
from gateway.policy import decide
from gateway.rewrite import key_placement
from gateway.settings import Config
from gateway.workload_identity import JwtVerifier, all_matches


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
        identity, also = asyncio.run(_identify(credentials, config))
        via = ",".join(credentials.sources) if identity.via != "anonymous" else "no credential"
        lines.append(f"client:   {identity.client.name}  ({identity.via} via {via})")
        lines += _jwt_lines(identity, also)
        decision = decide(identity.client, method, t, config)
    except GatewayError as error:
        lines.append(f"refused:  {error.status} {error.code}: {error.detail}")
        return lines, False
    rule = identity.client.rules[decision.rule]
    lines.append(f"rule:     #{decision.rule} {json.dumps(rule.model_dump(mode='json', exclude_none=True))}")
    lines.append(f"key:      {decision.key}  (sent to ProGet as {_placement(method, t)}; value not shown)")
    lines.append("decision: allow")
    return lines, True


_SHOWN = {
    "x-apikey": "X-ApiKey",
    "authorization": "Authorization: Basic api:<key>",
    "x-nuget-apikey": "X-NuGet-ApiKey",
}


def _placement(method: str, target: Target) -> str:
    """Where the key travels: asked of gateway.rewrite, which places it."""
    return " + ".join(_SHOWN[name] for name in key_placement(method, target))


async def _identify(credentials: Credentials, config: Config) -> tuple[Identity, list[str]]:
    """Identify as the proxy does; for a JWT also name the later clients it would match as well."""
    async with JwtVerifier(config) as verifier:
        identity = await identify(credentials, config, verifier)
        if identity.via != "jwt" or credentials.token is None:
            return identity, []
        matches = await all_matches(credentials.token, verifier)
    return identity, [m.client.name for m in matches if m.client.name != identity.client.name]


def _jwt_lines(identity: Identity, also: list[str]) -> list[str]:
    if identity.via != "jwt":
        return []
    lines = [
        f"jwt:      issuer {identity.issuer}, sub {identity.subject or '(none)'}",
        f"matched:  {', '.join(identity.matched)}",
    ]
    if also:
        lines.append(f"also:     {', '.join(also)} would match too, but come later (first match wins)")
    return lines
