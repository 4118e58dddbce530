"""Rewrite the request for ProGet and the response for the client.

Request: every credential channel, hop-by-hop header, method override and client identity or
routing header (:data:`CLIENT_IDENTITY_HEADERS`, plus the config's ``strip_request_headers``) goes;
ProGet receives exactly one ``X-ApiKey`` with the key the policy chose (feed routes add the same key
in the form feed clients use), a ``Host`` and ``X-Forwarded-*`` set by the gateway, and the path and
query exactly as decided on. The upstream URL is the configured origin plus that path: nothing a
client sends can choose where a key goes.

Response: nothing that echoes the key, no cookies (a ProGet session is a credential), ProGet's own
challenges replaced by the gateway's, and absolute redirects to the upstream's origin pointed back at
the gateway.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import urlsplit

from gateway.canonical import Route, Target
from gateway.credentials import Credentials, is_credential_header
from gateway.errors import CHALLENGE, HostInvalid
from gateway.framing import Head, connection_tokens
from gateway.memo import BoundedMemo
from gateway.settings import Config, UpstreamKey
from gateway.upstream import UpstreamRequest

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)
METHOD_OVERRIDES = frozenset(
    {
        b"x-http-method-override",
        b"x-http-method",
        b"x-method-override",
        b"x-original-method",
        b"x-original-url",  # IIS URL Rewrite and some frameworks route by these: never client-chosen
        b"x-rewrite-url",
    }
)
SET_BY_GATEWAY = frozenset(
    {
        b"host",
        b"forwarded",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"x-forwarded-prefix",
        b"x-real-ip",
        b"x-request-id",
        b"content-length",
        b"expect",
    }
)
# W3C trace context: never forwarded as a client sent it. gateway.tracing sends the gateway's own; with
# tracing off a trusted proxy's passes through (trace_context), nobody else's.
TRACE_HEADERS = frozenset({b"traceparent", b"tracestate"})
_NUGET_PUSH_METHODS = frozenset({"PUT", "POST", "DELETE"})
_LENGTH_REQUIRED = frozenset({"POST", "PUT", "PATCH"})


@dataclass(frozen=True, slots=True)
class HeaderTable:
    """Header names (lowercase, ``_`` folded to ``-``) matched exactly or by prefix."""

    exact: frozenset[bytes]
    prefixes: tuple[bytes, ...] = ()

    def matches(self, name: bytes) -> bool:
        n = name.lower().replace(b"_", b"-")
        return n in self.exact or n.startswith(self.prefixes)

    @classmethod
    def parse(cls, names: Iterable[str]) -> HeaderTable:
        """From config entries: ``name``, or ``prefix*``."""
        folded = [n.lower().replace("_", "-").encode("ascii") for n in names]
        return cls(
            frozenset(n for n in folded if not n.endswith(b"*")),
            tuple(n[:-1] for n in folded if n.endswith(b"*")),
        )


# Who the client is and how it came: headers ProGet, or a server in front of it, may believe. A client
# sets none of them; the gateway sends its own X-Forwarded-For/-Proto/-Host (trusted proxies' are read by
# client_view, never forwarded as sent). Site-specific names: ``strip_request_headers`` in the config.
CLIENT_IDENTITY_HEADERS = HeaderTable(
    exact=frozenset(
        {
            b"forwarded",  # RFC 7239
            b"x-forwarded",
            b"x-real-ip",  # nginx
            b"true-client-ip",  # Akamai, Cloudflare
            b"x-client-ip",
            b"client-ip",
            b"x-cluster-client-ip",
            b"cf-connecting-ip",
            b"x-host",
            b"front-end-https",  # IIS/ARR: "the client used https"
            b"remote-user",
            b"x-remote-user",
            b"x-user",
            b"x-authenticated-user",
        }
    ),
    prefixes=(
        b"x-forwarded-",  # X-Forwarded-For/-Proto/-Host/-Uri/-User/-Prefix/-Port/-Server/...
        b"x-original-",  # X-Original-URL/-Host/-For/-Proto (IIS, ingress-nginx)
        b"x-auth-request-",  # oauth2-proxy's identity headers
        b"x-ms-client-principal",  # Azure App Service / Easy Auth identity
        b"ms-aspnetcore-",  # the IIS ASP.NET Core Module's pairing and Windows-auth tokens
        b"x-arr-",  # IIS ARR: X-ARR-SSL, X-ARR-ClientCert
        b"x-gateway-",  # the gateway's own namespace: only the gateway speaks in it
    ),
)


class ClientView(NamedTuple):
    """How the client reached the gateway, after applying ``trusted_proxies``."""

    client_ip: str
    forwarded_for: str  # the X-Forwarded-For chain to send upstream
    proto: str  # how the client reached us (scheme, or a trusted proxy's X-Forwarded-Proto)
    host: str  # the Host the client used (or a trusted proxy's X-Forwarded-Host)
    public_origin: str  # public_url, else proto://host: Location rewriting and X-Forwarded-Proto/Host
    trusted: bool = False  # the peer is one of trusted_proxies (its X-Forwarded-* and trace context count)


def client_view(
    peer: str, scheme: str, head: Head, headers: list[tuple[bytes, bytes]], config: Config
) -> ClientView:
    """Resolve client address, scheme and host; X-Forwarded-* count only from trusted proxies."""
    if not config.settings.trusted_proxies:  # nobody's X-Forwarded-* counts: the peer is the client
        public = config.settings.public_url or f"{scheme}://{head.host}"
        return ClientView(peer, peer, scheme, head.host, public, False)
    proto, host, chain = scheme, head.host, [peer]
    trusted = is_trusted(peer, config)
    if trusted:
        sent = _forwarded(headers)
        chain = [*sent.get("for", []), peer]
        proto = _single(sent.get("proto"), proto, ("http", "https"))
        host = _single(sent.get("host"), host, None)
    public = config.settings.public_url or f"{proto}://{host}"
    return ClientView(_client_ip(chain, config), ", ".join(chain), proto, host, public, trusted)


def trace_context(headers: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """The W3C trace headers as sent, only when each appears once (two ``traceparent`` are no context)."""
    found = [(n.lower(), v) for n, v in headers if n.lower() in TRACE_HEADERS]
    if len({n for n, _ in found}) != len(found):
        return []
    return [(n.decode("latin-1"), v.decode("latin-1")) for n, v in found]


def is_trusted(ip: str, config: Config) -> bool:
    nets = config.settings.trusted_proxies
    if not nets:
        return False
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(addr in net for net in nets)


def _forwarded(headers: list[tuple[bytes, bytes]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in headers:
        if name.startswith(b"x-forwarded-"):
            field = name[len(b"x-forwarded-") :].decode("latin-1")
            out.setdefault(field, []).extend(v.strip() for v in value.decode("latin-1").split(","))
    return out


def _single(values: list[str] | None, default: str, allowed: tuple[str, ...] | None) -> str:
    if not values:
        return default
    value = values[-1]
    if allowed is not None and value not in allowed:
        return default
    if allowed is None and not _valid_host(value):
        raise HostInvalid("X-Forwarded-Host from a trusted proxy is malformed.")
    return value


def _valid_host(value: str) -> bool:
    return bool(value) and all(c.isalnum() or c in ".-:[]" for c in value) and value.isascii()


def _client_ip(chain: list[str], config: Config) -> str:
    """The right-most address that is not a trusted proxy (werkzeug ProxyFix's rule)."""
    for ip in reversed(chain):
        if not is_trusted(ip, config):
            return ip
    return chain[0]


def rewrite_request(
    method: str,
    target: Target,
    headers: list[tuple[bytes, bytes]],
    head: Head,
    credentials: Credentials,
    key: UpstreamKey,
    view: ClientView,
    config: Config,
    request_id: str,
    trace_headers: list[tuple[str, str]] | None = None,
) -> UpstreamRequest:
    """Build exactly what ProGet will receive. ``trace_headers``: the gateway's span context when
    tracing is on; otherwise a trusted proxy's trace context is passed through."""
    out = _kept_headers(headers, _site_table(config.settings.strip_request_headers))
    out += _gateway_headers(view, request_id, config)
    if trace_headers is None:
        trace_headers = trace_context(headers) if view.trusted else []
    out += trace_headers
    out += _key_headers(method, target, key)
    body = credentials.body
    chunked = body is None and head.chunked
    if body is not None:
        out.append(("content-length", str(len(body))))
    elif head.content_length is not None:
        out.append(("content-length", str(head.content_length)))
    elif chunked:
        out.append(("transfer-encoding", "chunked"))  # a streamed body of unknown length
    elif method in _LENGTH_REQUIRED:
        out.append(("content-length", "0"))  # IIS answers a POST without a length with 411
    query = credentials.query
    return UpstreamRequest(
        method, target.path + ("?" + query.decode("ascii") if query else ""), out, body, chunked
    )


@functools.cache
def _site_table(names: tuple[str, ...]) -> BoundedMemo[bytes, bool]:
    """Whether a request header name is stripped, per name: the rule depends on the name alone and
    clients send the same few names on every request, so each is decided once
    (:class:`gateway.memo.BoundedMemo`; deciding afresh was ~0.6 µs a header, issue 9)."""
    site = HeaderTable.parse(names)
    return BoundedMemo(lambda name: is_stripped(name, site))


def is_stripped(name: bytes, site: HeaderTable) -> bool:
    """Never forwarded: hop-by-hop, set by the gateway, a method override, trace context, a credential,
    client identity, or the config's ``strip_request_headers`` (``site``)."""
    n = name.lower().replace(b"_", b"-")  # some servers read "_" as "-": fold before every table
    return (
        n in HOP_BY_HOP
        or n in SET_BY_GATEWAY
        or n in METHOD_OVERRIDES
        or n in TRACE_HEADERS
        or is_credential_header(n)
        or CLIENT_IDENTITY_HEADERS.matches(n)
        or site.matches(n)
    )


def _kept_headers(
    headers: list[tuple[bytes, bytes]], stripped: BoundedMemo[bytes, bool]
) -> list[tuple[str, str]]:
    """The client's headers that ProGet may see: not stripped, not named by the client's Connection."""
    named = connection_tokens(headers)
    return [(n.decode("latin-1"), v.decode("latin-1")) for n, v in headers if not (stripped(n) or n in named)]


def _gateway_headers(view: ClientView, request_id: str, config: Config) -> list[tuple[str, str]]:
    """Host is never the client's: a load balancer or ingress in front of ProGet may route by Host,
    and the key must reach ProGet and nothing else. It is public_url's host when set (so ProGet builds
    links to the gateway), else the upstream's own. X-Forwarded-Proto/Host name the public origin."""
    proto, _, public_host = view.public_origin.partition("://")
    settings = config.settings
    host = public_host if settings.public_url else _authority(settings.upstream.url)
    return [
        ("host", host),
        ("x-forwarded-for", view.forwarded_for),
        ("x-forwarded-proto", proto),
        ("x-forwarded-host", public_host),
        ("x-request-id", request_id),
    ]


def key_placement(method: str, target: Target) -> tuple[str, ...]:
    """The headers that carry the key to ProGet: X-ApiKey always; on feed routes also
    ``Authorization: Basic api:<key>`` (what every feed type reads), and X-NuGet-ApiKey on NuGet pushes."""
    names = ["x-apikey"]
    if target.route is Route.FEED:
        names.append("authorization")
        if target.feed_type == "nuget" and method in _NUGET_PUSH_METHODS:
            names.append("x-nuget-apikey")
    return tuple(names)


def _key_headers(method: str, target: Target, key: UpstreamKey) -> list[tuple[str, str]]:
    value = {"x-apikey": key.x_apikey, "authorization": key.basic, "x-nuget-apikey": key.x_apikey}
    return [(name, value[name].decode("ascii")) for name in key_placement(method, target)]


def rewrite_response_headers(
    raw: Iterable[tuple[bytes, bytes]],
    key: UpstreamKey,
    status: int,
    upstream_origin: str,
    public_origin: str,
) -> list[tuple[bytes, bytes]]:
    """Filter ProGet's response headers for the client."""
    raw = list(raw)
    named = connection_tokens(raw)
    out: list[tuple[bytes, bytes]] = []
    for name, value in raw:
        n = _passed_name(name)
        if not n or n in named:
            continue
        if _echoes_key(value, key):
            continue
        if n in (b"location", b"content-location"):
            value = _rebase(value, upstream_origin, public_origin)
        out.append((n, value))
    if status == 401:
        out.append(CHALLENGE)
    return out


def _response_name(name: bytes) -> bytes:
    """The name as the client gets it (lowercase), or ``b""`` for a header never passed on: hop-by-hop,
    cookies (a ProGet session is a credential) and ProGet's own challenges (the gateway sends its own)."""
    n = name.lower()
    return b"" if n in HOP_BY_HOP or n in (b"set-cookie", b"www-authenticate") else n


_passed_name = BoundedMemo(_response_name)  # ProGet sends the same few names on every answer


@functools.cache
def _authority(url: str) -> str:
    """host[:port] of the configured upstream (one config per process: computed once)."""
    return urlsplit(url).netloc


def _echoes_key(value: bytes, key: UpstreamKey) -> bool:
    """The key in any spelling a header could carry it (gateway/needles.py): as is in any case, hex,
    base64 at any alignment, percent- or JSON-escaped. ProGet repeats the same few values (server,
    content type, cache headers), so each value's answer is remembered per key (``key.echoed``)."""
    return key.echoed(value)


def _rebase(value: bytes, upstream_origin: str, public_origin: str) -> bytes:
    origin = upstream_origin.encode("ascii")
    if value[: len(origin)].lower() == origin.lower() and value[len(origin) : len(origin) + 1] in (
        b"",
        b"/",
        b"?",
    ):
        return public_origin.encode("latin-1") + value[len(origin) :]
    return value
