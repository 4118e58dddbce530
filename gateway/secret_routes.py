"""ProGet routes whose answers carry ProGet's own secrets, and what it takes for a rule to reach one.

Some ProGet responses hand out secrets: ``POST /api/api-keys/create`` returns a new key, ``/v2/_auth``
a bearer token bound to the key the gateway injected (usable against ProGet directly, around the
gateway). A broad rule such as ``/api/**`` or ``feeds: [npm]`` is written for ordinary traffic, so it
never reaches these routes: only a rule whose ``paths`` spell the route out (``/api/api-keys/**``,
``/api/api-keys/create``) does, and ``proget-gateway check`` warns about every such rule. ``/v2/_auth``
is never relayed at all: clients only ever see the gateway's Basic challenge, never ProGet's Bearer one.

A path is compared in its most generous reading (every escape decoded, NFKC, ``\\`` as ``/``, trailing
dots and spaces dropped, case folded), so no spelling a server might route to a secret route
escapes the list. Source: ``proget-facts.md``, "ProGet responses that contain secrets".
"""

from __future__ import annotations

import functools
import itertools
import unicodedata
from dataclasses import dataclass
from urllib.parse import unquote

from gateway.settings import Config

__all__ = ["SECRET_ROUTES", "SecretRoute", "names", "naming_rules", "secret_route"]

ANY = None  # a prefix position that matches any one segment (a feed name)


@dataclass(frozen=True, slots=True)
class SecretRoute:
    prefix: tuple[str | None, ...]  # case-folded literal segments; ANY for one segment of any name
    leaks: str  # what ProGet's answer carries
    nameable: bool = True  # False: refused whatever the rules say

    @property
    def glob(self) -> str:
        """The route as a rule glob, with ``*`` for a feed position: how docs and messages name it."""
        return "/" + "/".join("*" if s is ANY else s for s in self.prefix) + "/**"


SECRET_ROUTES: tuple[SecretRoute, ...] = (
    SecretRoute(("api", "api-keys"), "new API keys, and every key's text when key hashing is off"),
    SecretRoute(("api", "security"), "users, groups and permissions; user create/update carries passwords"),
    SecretRoute(("api", "settings"), "every setting, including the license key (Licensing.Key)"),
    SecretRoute(("api", "management", "connectors"), "connector user names and passwords"),
    SecretRoute(("api", "storage"), "feed storage properties: cloud storage credentials"),
    SecretRoute(("npm", ANY, "-", "user"), "the token `npm login` returns"),
    SecretRoute(("npm", ANY, "-", "npm", "v1", "tokens"), "npm access tokens (npm's token API)"),
    SecretRoute(("v2", "_auth"), "a Docker bearer token ProGet signs for the injected key", nameable=False),
)


# By first segment, and how many leading segments any route looks at: every request's path is checked,
# so only the few routes that share its first segment are compared, and only as many segments as the
# longest prefix are decoded and folded (the linear scan over all routes was 5 % of a request's CPU).
_BY_FIRST: dict[str | None, tuple[SecretRoute, ...]] = {
    first: tuple(r for r in SECRET_ROUTES if r.prefix[0] == first)
    for first in {r.prefix[0] for r in SECRET_ROUTES}
}
_LONGEST = max(len(r.prefix) for r in SECRET_ROUTES)


def secret_route(path: str) -> SecretRoute | None:
    """The secret-bearing route ``path`` reaches in any reading, or None.

    Cached by path for paths up to :data:`CACHED_PATH_CHARS` (bounded by count and entry size, about
    3 MiB at most): the generous reading (decode, NFKC, fold) was ~8 µs of every request, and clients
    repeat their paths. The answer depends on the path alone."""
    return _cached_route(path) if len(path) <= CACHED_PATH_CHARS else _route(path)


CACHED_PATH_CHARS = 256


@functools.lru_cache(maxsize=8192)
def _cached_route(path: str) -> SecretRoute | None:
    return _route(path)


def _route(path: str) -> SecretRoute | None:
    segments = _generous_segments(path, _LONGEST)
    if not segments:
        return None
    for route in _BY_FIRST.get(segments[0], ()):
        if _starts_with(segments, route.prefix):
            return route
    return None


def names(glob: str, route: SecretRoute) -> bool:
    """True when ``glob`` spells out every literal segment of ``route``'s prefix, without wildcards.

    ``/api/api-keys/**`` and ``/api/api-keys/create`` name ``/api/api-keys``; ``/api/**``,
    ``/api/*/create`` and ``/api/api-*/**`` do not. A feed position may be a name or ``*``.
    """
    parts = glob.split("/")[1:]
    if len(parts) < len(route.prefix):
        return False
    return all(_names_segment(part, want) for part, want in zip(parts, route.prefix, strict=False))


def naming_rules(config: Config) -> list[str]:
    """One line per rule path that names a secret-bearing route: what ``proget-gateway check`` warns."""
    out = []
    for client in config.settings.clients:
        for i, rule in enumerate(client.rules):
            for glob in rule.paths or ():
                out += [
                    f"client {client.name!r} rule #{i} path {glob!r} allows {route.glob}, where ProGet's "
                    f"answers carry {route.leaks}"
                    for route in SECRET_ROUTES
                    if route.nameable and names(glob, route)
                ]
    return out


def _names_segment(part: str, want: str | None) -> bool:
    if want is ANY:
        return part != "**"
    return "*" not in part and part.casefold() == want


def _generous_segments(path: str, limit: int) -> list[str]:
    """The first ``limit`` non-empty segments of ``path``, decoded and folded. NFKC comes before the
    split, so a compatibility form of a separator (full-width solidus U+FF0F, small reverse solidus
    U+FE68) separates too; a segment that folds to nothing (``.``, ``. .``) is skipped like an empty
    one."""
    decoded = unicodedata.normalize("NFKC", unquote(path, errors="replace")).replace("\\", "/")
    folded = (_fold(s) for s in decoded.split("/"))
    return list(itertools.islice((s for s in folded if s), limit))  # "." folds to "": read like "//"


def _fold(segment: str) -> str:
    return unicodedata.normalize("NFKC", segment).rstrip(". ").casefold()


def _starts_with(segments: list[str], prefix: tuple[str | None, ...]) -> bool:
    """Plain loops here and in :func:`secret_route`: generators made the check 5 µs per request."""
    if len(segments) < len(prefix):
        return False
    for seg, want in zip(segments, prefix, strict=False):  # noqa: SIM110 - see the docstring
        if want is not ANY and seg != want:
            return False
    return True
