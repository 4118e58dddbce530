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
from gateway.errors import CredentialMissing, GatewayError, TokenUnknown
from gateway.framing import check_head
from gateway.identity import Identity, identify
from gateway.policy import decide
from gateway.rewrite import key_placement
from gateway.settings import Config
from gateway.workload_identity import JwtVerifier, all_matches, mismatch, peek


def explain(config: Config, method: str, target: bytes, token: str | None) -> tuple[list[str], bool]:
    """Return printable lines and whether the request would be forwarded."""
    lines: list[str] = []
    headers = [(b"host", b"gateway.invalid")]
    if token is not None:
        headers.append((b"authorization", b"Bearer " + token.encode("utf-8")))
    try:
        t = _request(config, method, target, headers, lines)
        credentials = find_credentials(headers, t, None, BodyKind.STREAM, config.settings.limits)
        identity, also = asyncio.run(_identify(credentials, config))
        via = ",".join(credentials.sources) if identity.via != "anonymous" else "no credential"
        lines.append(f"client:   {identity.client.name}  ({identity.via} via {via})")
        lines += _jwt_lines(identity, also)
        return _decide(config, method, t, identity, lines)
    except GatewayError as error:
        if token is not None and error.status == 401:
            lines += _why_no_jwt_client(config, token, error)
        return _refused(lines, error)


def explain_as(config: Config, client: str | None, method: str, target: bytes) -> tuple[list[str], bool]:
    """The same decision for a client picked by name, or anonymous (``None``): the status page's form,
    where no token is ever typed in. Identification is the only stage it does not run."""
    lines: list[str] = []
    try:
        t = _request(config, method, target, [(b"host", b"gateway.invalid")], lines)
        identity = _chosen(config, client)
        via = "picked by name" if client is not None else "no credential"
        lines.append(f"client:   {identity.client.name}  ({identity.via}: {via})")
        return _decide(config, method, t, identity, lines)
    except GatewayError as error:
        return _refused(lines, error)


def _request(
    config: Config, method: str, target: bytes, headers: list[tuple[bytes, bytes]], lines: list[str]
) -> Target:
    limits = config.settings.limits
    check_head(method, headers, limits)
    t = canonicalize(target, max_target_bytes=limits.max_target_bytes)
    route = t.route.value + (f", method {t.native_method}" if t.route is Route.NATIVE else "")
    route += f", feed {t.feed}" if t.feed else ""
    lines.append(f"request:  {method} {t.path}  ({route})")
    return t


def _chosen(config: Config, client: str | None) -> Identity:
    if client is None:
        if config.anonymous is None:
            raise CredentialMissing()
        return Identity(config.anonymous, "anonymous")
    if client not in config.clients:
        raise TokenUnknown()
    return Identity(config.clients[client], "named")


def _decide(
    config: Config, method: str, t: Target, identity: Identity, lines: list[str]
) -> tuple[list[str], bool]:
    decision = decide(identity.client, method, t, config)
    rule = identity.client.rules[decision.rule]
    lines.append(f"rule:     #{decision.rule} {json.dumps(rule.model_dump(mode='json', exclude_none=True))}")
    lines.append(f"key:      {decision.key}  (sent to ProGet as {_placement(method, t)}; value not shown)")
    lines.append("decision: allow")
    return lines, True


def _refused(lines: list[str], error: GatewayError) -> tuple[list[str], bool]:
    lines.append(f"refused:  {error.status} {error.code}: {error.detail}")
    return lines, False


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


def _why_no_jwt_client(config: Config, token: str, error: GatewayError) -> list[str]:
    """Per jwt client, the first check the token fails (issuer, audience, which claim: expected vs
    the token's value), or, when its claims fit, why verification refused it. Claim values only: a
    claim is what the token says about itself, never the token or its signature."""
    parts = peek(token)
    if parts is None:
        return []
    lines = []
    for client in config.jwt_clients:
        if client.jwt is not None:
            reason = mismatch(client.jwt, parts[1]) or f"issuer, audience and claims fit; {error.detail}"
            lines.append(f"jwt client {client.name}: {reason}")
    return lines


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
