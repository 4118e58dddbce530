"""Client + canonical request → which ProGet key, by the first matching rule; no match is a refusal.

Rules only ever grant; the default is deny. A Native API call must name a method on the global
allowlist before any rule is consulted, and only rules that list that method can match it. Globs and
names match case-insensitively because ProGet's routing does: `/NuGet/Internal` is the same feed as
`/nuget/internal`, so a case-sensitive rule would only ever be a surprise, never a protection.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import NamedTuple

from gateway.canonical import Route, Target
from gateway.errors import NativeMethodNotAllowed, NoMatchingRule, SecretRouteBlocked, SecretRouteNotNamed
from gateway.secret_routes import SecretRoute, names, secret_route
from gateway.settings import ClientSettings, Config, Rule


class Decision(NamedTuple):
    client: str
    rule: int  # index in the client's rules
    key: str  # the key's name, never its value


def decide(client: ClientSettings, method: str, target: Target, config: Config) -> Decision:
    """First rule of ``client`` that matches wins; refuse with a reason when none does.

    On a route whose answers carry ProGet's secrets (:mod:`gateway.secret_routes`) a rule matches only
    through a path glob that names the route; ``/v2/_auth`` is refused whatever the rules say.
    """
    if target.route is Route.NATIVE:
        _check_native_allowed(target, config)
    secret = secret_route(target.path)
    if secret is not None and not secret.nameable:
        raise SecretRouteBlocked()
    for index, rule in _candidates(client, method, config):
        if rule_matches(rule, method, target, secret):
            return Decision(client.name, index, rule.key)
    if secret is not None:
        raise SecretRouteNotNamed(
            f"ProGet's answers on {secret.glob} carry secrets ({secret.leaks}); no rule of client "
            f"{client.name!r} that names this route in its paths allows {method} on it."
        )
    raise NoMatchingRule(f"No rule of client {client.name!r} allows {method} on this path.")


def _candidates(client: ClientSettings, method: str, config: Config) -> Iterable[tuple[int, Rule]]:
    """The client's rules that can match ``method``, in order (``Config.rules_by_method``); every rule
    for a method the index does not hold or a client that is not the config's own."""
    indexed = config.rules_by_method.get(client.name) if config.clients.get(client.name) is client else None
    found = indexed.get(method) if indexed is not None else None
    return found if found is not None else enumerate(client.rules)


def _check_native_allowed(target: Target, config: Config) -> None:
    method = target.native_method or ""
    if method.casefold() not in config.native_allow:
        raise NativeMethodNotAllowed(f"Native API method {method!r} is not on the allowlist.")


def rule_matches(rule: Rule, method: str, target: Target, secret: SecretRoute | None = None) -> bool:
    """One rule against one request; the rule's fields are ANDed, each list is ORed.

    ``secret``: the secret-bearing route the path reaches; then only a glob naming it can match.
    """
    if rule.methods is not None and method not in rule.methods:
        return False
    if rule.native is not None:
        return target.route is Route.NATIVE and _native_listed(rule.native, target.native_method)
    if target.route is Route.NATIVE:
        return False
    if rule.feeds is not None and not _feed_listed(rule.feeds, target.feed):
        return False
    if secret is not None:
        return rule.paths is not None and any(
            names(p, secret) and glob_regex(p).fullmatch(target.path) for p in rule.paths
        )
    return rule.paths is None or any(glob_regex(p).fullmatch(target.path) for p in rule.paths)


def _native_listed(names: tuple[str, ...], method: str | None) -> bool:
    return method is not None and method.casefold() in _folded(names)


def _feed_listed(feeds: tuple[str, ...], feed: str | None) -> bool:
    return feed is not None and feed.casefold() in _folded(feeds)


@lru_cache(maxsize=4096)
def _folded(names: tuple[str, ...]) -> frozenset[str]:
    return frozenset(n.casefold() for n in names)


@lru_cache(maxsize=4096)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """`*` matches within one segment, a whole `**` segment matches zero or more segments."""
    parts = pattern.split("/")[1:]
    out = ""
    for part in parts:
        if part == "**":
            out += "(?:/.*)?"
        else:
            out += "/" + re.escape(part).replace(r"\*", "[^/]*")
    return re.compile(out or "/", re.IGNORECASE | re.ASCII)
