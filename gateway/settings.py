"""Configuration: load YAML, validate it (every problem at once), resolve secrets, freeze.

This module is the only reader of the config file, of key files and of ``os.environ`` for keys. The
result, :class:`Config`, is immutable and is built once at start; nothing on the request path reads
files or the environment.

Validation happens in two passes so that *every* problem is reported in one run:
1. pydantic checks the structure (types, unknown fields, shapes of hashes, globs, method names);
2. cross-references (rule → key, rule → native allowlist, unique client names, one anonymous client)
   are checked on the raw document, tolerant of whatever pass 1 refused;
then key sources are resolved. Problem texts name the place and the reason, never a secret's value.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import ssl
from base64 import b64encode
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

import jwt as pyjwt
import yaml
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from gateway.memo import BoundedMemo
from gateway.needles import Needles

HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
Method = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

_TOKEN_HASH = re.compile(r"sha256:[0-9a-f]{64}")
_NATIVE_NAME = re.compile(r"[A-Za-z0-9_]+")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")  # client and key names: audit lines, metric labels
_FEED_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~-]*")
_GLOB_SEGMENT = re.compile(r"(\*\*|[A-Za-z0-9._~!$&'()+,;=:@%*-]*)")
_KEY_VALUE = re.compile(r"[\x21-\x7e]+")
_HEADER_TOKEN = re.compile(r"[!#$%&'+.^_`|~0-9A-Za-z-]+")  # RFC 9110 tchar, less '*' (our prefix mark)
# Headers the gateway's decision rests on (framing, body kind, Host): ProGet must receive them as checked,
# so neither Connection (framing.check_head) nor strip_request_headers may remove them.
DECISION_HEADERS = ("content-type", "content-encoding", "content-length", "transfer-encoding", "host")


class ConfigError(Exception):
    """The config cannot be used; ``problems`` holds every ``path: reason`` found."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: {len(problems)} problem(s)")


# --- pass 1: structure ------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_glob(pattern: str) -> str:
    if not pattern.startswith("/"):
        raise ValueError("a path glob must start with '/'")
    for segment in pattern.split("/")[1:]:
        if not _GLOB_SEGMENT.fullmatch(segment) or ("**" in segment and segment != "**"):
            raise ValueError(f"malformed glob {pattern!r}: '**' must be a whole segment; no ?, [ ] or spaces")
    return pattern


def _check_token_hash(value: str) -> str:
    if not _TOKEN_HASH.fullmatch(value):
        raise ValueError("a token must be 'sha256:' followed by 64 lowercase hex digits")
    return value


def _check_native_name(value: str) -> str:
    if not _NATIVE_NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not a Native API method name ([A-Za-z0-9_]+)")
    return value


def _check_feed_name(value: str) -> str:
    if not _FEED_NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not a feed name")
    return value


def _check_strip_name(value: str) -> str:
    """A header name, or a prefix ending in ``*``; never one ProGet must receive as checked."""
    prefix = value.endswith("*")
    name = value.removesuffix("*").lower().replace("_", "-")
    if not _HEADER_TOKEN.fullmatch(name):
        raise ValueError(f"{value!r} is not a header name (letters, digits, !#$%&'+.^_`|~-; a final '*')")
    kept = [h for h in DECISION_HEADERS if (h.startswith(name) if prefix else h == name)]
    if kept:
        raise ValueError(f"{value!r} would strip {', '.join(kept)}, which ProGet must receive as checked")
    return value


Glob = Annotated[str, AfterValidator(_check_glob)]
TokenHash = Annotated[str, AfterValidator(_check_token_hash)]
NativeName = Annotated[str, AfterValidator(_check_native_name)]
FeedName = Annotated[str, AfterValidator(_check_feed_name)]
Name = Annotated[str, Field(pattern=rf"^{_NAME.pattern}$")]  # pydantic searches: anchor it
Seconds = Annotated[float, Field(gt=0, le=86400)]
Port = Annotated[int, Field(ge=0, le=65535)]


class Timeouts(_Strict):
    connect: Seconds = 5.0
    read: Seconds = 300.0
    write: Seconds = 300.0
    pool: Seconds = 10.0


class Tls(_Strict):
    verify: bool = True
    ca_file: Path | None = None


class UpstreamQueue(_Strict):
    """Requests waiting for a slot under ``upstream.max_in_flight`` (see gateway/admission.py)."""

    max: int = Field(default=1000, ge=0, le=100000)
    timeout: Seconds = 30.0


class UpstreamSettings(_Strict):
    url: str
    timeouts: Timeouts = Timeouts()
    tls: Tls = Tls()
    max_in_flight: int | None = Field(default=None, ge=1, le=100000)  # None: no global cap
    queue: UpstreamQueue = UpstreamQueue()

    @field_validator("url")
    @classmethod
    def _origin_only(cls, url: str) -> str:
        """The upstream is an origin: the gateway appends only the validated path to it."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if parts.username or parts.password:
            raise ValueError("must not carry credentials; keys go in 'keys'")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError("must be an origin (scheme://host[:port]) without path, query or fragment")
        return f"{parts.scheme}://{parts.netloc}"


class Listen(_Strict):
    host: str = "127.0.0.1"
    port: Port = 8080
    # Seconds an idle keep-alive connection stays open. Behind a load balancer set it above the
    # balancer's idle timeout, or the balancer reuses a connection the gateway is closing (a 502).
    keep_alive_timeout: float = Field(default=5.0, gt=0, le=3600)


class AdminListen(_Strict):
    host: str = "127.0.0.1"
    port: Port = 9090


class KeySource(_Strict):
    env: str | None = None
    file: Path | None = None
    value: SecretStr | None = None
    expires: AwareDatetime | None = None  # when ProGet stops accepting it: a gauge and a `check` warning

    @model_validator(mode="after")
    def _exactly_one(self) -> KeySource:
        given = [n for n in ("env", "file", "value") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of env, file, value (got {', '.join(given) or 'none'})")
        return self


class NativeApi(_Strict):
    allow: tuple[NativeName, ...] = ()


class Rule(_Strict):
    methods: tuple[Method, ...] | None = None
    paths: tuple[Glob, ...] | None = None
    native: tuple[NativeName, ...] | None = None
    feeds: tuple[FeedName, ...] | None = None
    key: str

    @model_validator(mode="after")
    def _native_is_exclusive(self) -> Rule:
        if self.native is not None and (self.paths is not None or self.feeds is not None):
            raise ValueError("a rule with 'native' matches only Native API calls; it takes no paths or feeds")
        for name in ("methods", "paths", "native", "feeds"):
            if getattr(self, name) == ():
                raise ValueError(f"'{name}' is empty: leave it out to match everything")
        return self


# --- jwt clients (workload identity: Kubernetes service accounts, CI OIDC tokens) --------------------

JWT_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
# Claims the verifier itself checks (iss, aud, exp, nbf, iat) or that identify nothing (jti).
_RESERVED_CLAIMS = frozenset({"iss", "aud", "exp", "nbf", "iat", "jti"})
DISCOVERY_PATH = "/.well-known/openid-configuration"


def _check_algorithm(value: str) -> str:
    """Only asymmetric algorithms: with HMAC the issuer's public key would become a shared secret."""
    if value.casefold() == "none":
        raise ValueError("'none' is never accepted: such a token carries no signature")
    if value.upper().startswith("HS"):
        raise ValueError(
            f"{value!r} is never accepted: HMAC would turn the issuer's public key into a secret"
        )
    if value not in JWT_ALGORITHMS:
        raise ValueError(f"{value!r} is not a supported signature algorithm ({', '.join(JWT_ALGORITHMS)})")
    return value


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_fetch_url(url: str) -> str:
    """A URL keys are fetched from: https, or plain http to a loopback host only (a local sidecar, tests).

    Keys fetched over plain http from anywhere else could be swapped on the way, and with them every
    identity the issuer vouches for.
    """
    parts = urlsplit(url)
    if not parts.hostname or parts.username or parts.password or parts.fragment:
        raise ValueError("must be an https:// URL with a host, without credentials or fragment")
    if parts.scheme != "https" and not (parts.scheme == "http" and _is_loopback(parts.hostname)):
        raise ValueError("must be an https:// URL (http:// only for a loopback host)")
    return url


def _one_or_many(value: object) -> object:
    """``x`` and ``[x, y]`` are both accepted; numbers and booleans must be quoted to be compared."""
    if isinstance(value, bool | int | float):
        raise ValueError(f"{value!r} is not a string: quote it (token claims are compared as strings)")
    return value if isinstance(value, list | tuple) else (value,)


def _non_empty(values: tuple[str, ...]) -> tuple[str, ...]:
    # an AfterValidator, not min_length: it runs only when the items were valid, so one bad item is
    # reported once instead of also as "too short"
    if not values:
        raise ValueError("is empty: give at least one value")
    return values


ClaimValues = Annotated[
    tuple[Annotated[str, Field(min_length=1)], ...], BeforeValidator(_one_or_many), AfterValidator(_non_empty)
]
Algorithm = Annotated[str, AfterValidator(_check_algorithm)]


class JwtSettings(_Strict):
    """How a client is recognised by a JWT: who issued it, for whom, and which claims it must carry."""

    issuer: Annotated[str, Field(min_length=1, max_length=2048)]
    audience: ClaimValues
    claims: dict[Annotated[str, Field(min_length=1, max_length=256)], ClaimValues] = {}
    jwks_url: Annotated[str, AfterValidator(check_fetch_url)] | None = None
    jwks_file: Path | None = None
    algorithms: Annotated[tuple[Algorithm, ...], AfterValidator(_non_empty)] = ("RS256", "ES256")
    leeway: float = Field(default=30.0, ge=0, le=300)

    @field_validator("claims")
    @classmethod
    def _no_reserved(cls, claims: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        reserved = sorted(_RESERVED_CLAIMS.intersection(claims))
        if reserved:
            raise ValueError(f"{', '.join(reserved)}: checked by issuer/audience/leeway, not by claims")
        return claims

    @model_validator(mode="after")
    def _one_key_source(self) -> JwtSettings:
        if self.jwks_url is not None and self.jwks_file is not None:
            raise ValueError("give at most one of jwks_url, jwks_file")
        if self.jwks_url is None and self.jwks_file is None:
            try:
                check_fetch_url(self.discovery_url)
            except ValueError as exc:
                raise ValueError(f"issuer: keys are discovered from it, so it {exc}") from None
        return self

    @property
    def discovery_url(self) -> str:
        return self.issuer.rstrip("/") + DISCOVERY_PATH

    def wanted(self) -> dict[str, frozenset[str]]:
        return {name: frozenset(values) for name, values in self.claims.items()}


class Rate(_Strict):
    """A token bucket: ``burst`` requests at once, refilled at ``per_second``."""

    per_second: float = Field(gt=0, le=1_000_000)
    burst: int = Field(ge=1, le=10_000_000)


class ClientLimits(_Strict):
    """Per-client limits; a field left out falls back to ``limits.default_client``'s, then to none."""

    rate: Rate | None = None
    concurrency: int | None = Field(default=None, ge=1, le=100000)
    uploads: int | None = Field(default=None, ge=1, le=100000)


class TokenEntry(_Strict):
    """A gateway token's sha256, with an optional label (named in the audit line) and end of validity.

    Rotation without a flag day: add the new token, hand it out, let the old one reach ``not_after``
    (then 401 ``token_expired``, not ``token_unknown``, so the client's owner knows what happened)."""

    hash: TokenHash
    label: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")] | None = None
    not_after: AwareDatetime | None = None


def _token_entry(value: object) -> object:
    """The plain string form (``"sha256:…"``) stays valid: it is an entry with only a hash."""
    return {"hash": value} if isinstance(value, str) else value


TokenList = tuple[Annotated[TokenEntry, BeforeValidator(_token_entry)], ...]


class ClientSettings(_Strict):
    name: Name
    tokens: TokenList = ()
    tokens_file: Path | None = None  # more entries (same forms), e.g. from a mounted Secret
    jwt: JwtSettings | None = None
    anonymous: bool = False
    rules: tuple[Rule, ...] = Field(min_length=1)
    limits: ClientLimits = ClientLimits()


class RedisSettings(_Strict):
    """Where the shared buckets live. The URL may hold a password: it is read, never logged."""

    url_file: Path | None = None
    url: SecretStr | None = None
    timeout: float = Field(default=0.05, gt=0, le=10)  # seconds per call, connecting included
    prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9:._-]{0,62}$")] = "pgw"
    max_connections: int = Field(default=32, ge=1, le=1024)

    @model_validator(mode="after")
    def _one_source(self) -> RedisSettings:
        if (self.url_file is None) == (self.url is None):
            raise ValueError("give exactly one of url_file, url")
        return self


class RateLimitSettings(_Strict):
    backend: Literal["local", "redis"] = "local"
    redis: RedisSettings | None = None
    on_backend_error: Literal["allow", "deny"] = "allow"
    shadow: bool = False  # count and log what would be refused, refuse nothing

    @model_validator(mode="after")
    def _redis_given(self) -> RateLimitSettings:
        if self.backend == "redis" and self.redis is None:
            raise ValueError("backend 'redis' needs a 'redis' section (url_file or url)")
        return self


class Limits(_Strict):
    max_rewrite_body_bytes: int = Field(default=1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    max_target_bytes: int = Field(default=8192, ge=256, le=65536)
    max_header_count: int = Field(default=100, ge=16, le=1000)
    max_header_bytes: int = Field(default=32 * 1024, ge=4096, le=1024 * 1024)
    max_query_params: int = Field(default=256, ge=1, le=10000)
    max_form_params: int = Field(default=1024, ge=1, le=100000)
    head_timeout: float = Field(default=10.0, gt=0, le=300)  # seconds to send a request head
    body_timeout: float = Field(default=30.0, gt=0, le=3600)  # seconds to send a body the gateway inspects
    # bytes of inspected bodies held at once, process-wide; credential-less requests get 1/8 of it
    max_inspected_bytes_in_flight: int = Field(default=32 * 1024 * 1024, ge=1024, le=16 * 1024**3)
    default_client: ClientLimits = ClientLimits()  # none: today's behaviour unless configured

    @model_validator(mode="after")
    def _room_for_one_body(self) -> Limits:
        if self.max_inspected_bytes_in_flight < self.max_rewrite_body_bytes:
            raise ValueError(
                "max_inspected_bytes_in_flight must be at least max_rewrite_body_bytes "
                "(otherwise no inspected body of the largest allowed size could ever be read)"
            )
        return self


class Shutdown(_Strict):
    """First SIGTERM/SIGINT: /readyz 503 at once, keep accepting ``drain_delay`` seconds (so load balancers
    and endpoints see the pod go), stop accepting, give in-flight requests ``timeout`` seconds, then
    abort what still runs. A second signal exits at once."""

    drain_delay: float = Field(default=5.0, ge=0, le=300)
    timeout: float = Field(default=25.0, ge=0, le=3600)


class Tracing(_Strict):
    """OpenTelemetry traces (gateway/tracing.py), off unless this section or OTEL_EXPORTER_OTLP_*ENDPOINT
    is set. What is not given here comes from the standard OTEL_* variables (headers, timeout, sampler)."""

    otlp_endpoint: str | None = None  # OTLP/HTTP base URL, e.g. http://otel-collector:4318 (+ /v1/traces)
    sample_ratio: float | None = Field(default=None, ge=0, le=1)  # None: OTEL_TRACES_SAMPLER, else 1.0
    service_name: str = Field(default="proget-gateway", min_length=1, max_length=200)

    @field_validator("otlp_endpoint")
    @classmethod
    def _endpoint(cls, url: str | None) -> str | None:
        if url is None:
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL such as http://otel-collector:4318")
        if parts.username or parts.password:
            raise ValueError("must not carry credentials; use OTEL_EXPORTER_OTLP_HEADERS")
        if parts.query or parts.fragment:
            raise ValueError("must not have a query or fragment")
        return url.rstrip("/")


class StatusPage(_Strict):
    recent: int = Field(default=200, ge=1, le=100_000)  # refusals kept in memory for the admin page


class Settings(_Strict):
    upstream: UpstreamSettings
    public_url: str | None = None
    listen: Listen = Listen()
    admin: AdminListen = AdminListen()
    trusted_proxies: tuple[IPvAnyNetwork, ...] = ()
    strip_request_headers: tuple[Annotated[str, AfterValidator(_check_strip_name)], ...] = ()
    keys: dict[Name, KeySource]
    native_api: NativeApi = NativeApi()
    clients: tuple[ClientSettings, ...] = Field(min_length=1)
    limits: Limits = Limits()
    rate_limit: RateLimitSettings = RateLimitSettings()
    status_page: StatusPage = StatusPage()
    shutdown: Shutdown = Shutdown()
    tracing: Tracing | None = None

    @field_validator("public_url")
    @classmethod
    def _public_origin(cls, url: str | None) -> str | None:
        if url is None:
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.username:
            raise ValueError("must be an http(s) origin such as https://proget-gw.example.com")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError("must be an origin without path, query or fragment")
        return f"{parts.scheme}://{parts.netloc}"


def _why(exc: Exception) -> str:
    """Why a file could not be read, in words (never a library's exception class name)."""
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return "unreadable"


# --- pass 2: cross-references on the raw document -----------------------------------------------------


def _as_list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _as_dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _cross_check(raw: dict[str, Any]) -> list[str]:
    """Reference checks that need the whole document; tolerant of shapes pass 1 refused."""
    problems: list[str] = []
    keys = set(_as_dict(raw.get("keys")))
    allowed = {str(m).casefold() for m in _as_list(_as_dict(raw.get("native_api")).get("allow"))}
    seen: dict[str, int] = {}
    anonymous: list[str] = []
    for i, client in enumerate(_as_list(raw.get("clients"))):
        client = _as_dict(client)
        name = client.get("name")
        if isinstance(name, str):
            if name in seen:
                problems.append(
                    f"clients[{i}].name: duplicate client name {name!r} (also clients[{seen[name]}])"
                )
            seen.setdefault(name, i)
        if client.get("anonymous") is True:
            anonymous.append(f"clients[{i}]")
        problems += _check_way_in(f"clients[{i}]", client)
        for j, rule in enumerate(_as_list(client.get("rules"))):
            problems += _check_rule_refs(f"clients[{i}].rules[{j}]", _as_dict(rule), keys, allowed)
    if len(anonymous) > 1:
        problems.append(
            f"clients: more than one anonymous client ({', '.join(anonymous)}); at most one is allowed"
        )
    return problems + _check_ports(raw)


def _check_ports(raw: dict[str, Any]) -> list[str]:
    """The admin endpoints never share the proxy's port: bound twice, the proxy answered only 404s."""
    listen = _as_dict(raw.get("listen")).get("port", Listen().port)
    admin = _as_dict(raw.get("admin")).get("port", AdminListen().port)
    if isinstance(admin, int) and admin == listen:
        return [f"admin.port: {admin} is also listen.port; the admin endpoints never share the proxy's port"]
    return []


def _check_way_in(where: str, client: dict[str, Any]) -> list[str]:
    """A client is reached by tokens and/or a jwt, or is the anonymous one — never both, never neither."""
    anonymous = client.get("anonymous") is True
    tokens = bool(client.get("tokens")) or client.get("tokens_file") is not None
    jwt = client.get("jwt") is not None
    if anonymous and tokens:
        return [f"{where}: an anonymous client takes no tokens"]
    if anonymous and jwt:
        return [f"{where}: an anonymous client takes no jwt"]
    if not anonymous and not tokens and not jwt:
        # the text predates jwt clients; a client with 'jwt' never gets here
        return [f"{where}: a client needs 'tokens', 'jwt' or 'anonymous: true'"]
    return []


def _check_rule_refs(where: str, rule: dict[str, Any], keys: set[str], allowed: set[str]) -> list[str]:
    problems = []
    key = rule.get("key")
    if isinstance(key, str) and key not in keys:
        problems.append(f"{where}.key: unknown key {key!r} (define it under 'keys')")
    for k, method in enumerate(_as_list(rule.get("native"))):
        if isinstance(method, str) and method.casefold() not in allowed:
            problems.append(f"{where}.native[{k}]: {method!r} is not in native_api.allow")
    return problems


# --- secrets -----------------------------------------------------------------------------------------------


def _resolve_key(name: str, source: KeySource, base: Path, env: Mapping[str, str]) -> SecretStr | str:
    """Return the key, or a problem text (which never includes the value)."""
    where = f"keys.{name}"
    if source.env is not None:
        if source.env not in env:
            return f"{where}.env: environment variable {source.env} is not set"
        value = env[source.env]
    elif source.file is not None:
        path = in_folder(base, source.file)
        try:
            value = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            return f"{where}.file: cannot read {path}: {_why(exc)}"
    else:
        value = source.value.get_secret_value() if source.value else ""
    if not _KEY_VALUE.fullmatch(value):
        return f"{where}: the key is empty or has characters not allowed in an HTTP header"
    return SecretStr(value)


# --- the frozen result ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UpstreamKey:
    """A resolved ProGet key and the header values that carry it, computed once at start."""

    name: str
    secret: SecretStr = field(repr=False)
    x_apikey: bytes = field(repr=False)
    basic: bytes = field(repr=False)
    echoes: Needles = field(repr=False)  # every spelling of the key a response may echo (gateway/needles.py)
    echoed: BoundedMemo[bytes, bool] = field(repr=False, compare=False)  # echoes.found_in, per header value

    @classmethod
    def build(cls, name: str, secret: SecretStr) -> UpstreamKey:
        raw = secret.get_secret_value()
        # built once per key, at freeze: every response header is checked against it
        echoes = Needles.of([raw.encode("ascii")], compiled=True)
        return cls(
            name=name,
            secret=secret,
            x_apikey=raw.encode("ascii"),
            basic=b"Basic " + b64encode(f"api:{raw}".encode()),
            echoes=echoes,
            echoed=BoundedMemo(echoes.found_in, entries=4096, key_bytes=256),
        )


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """What a configured token hash stands for."""

    client: str
    label: str | None = None
    not_after: float | None = None  # POSIX seconds; None: no end


RuleCandidates = tuple[tuple[int, Rule], ...]


def _rules_by_method(rules: tuple[Rule, ...]) -> dict[str, RuleCandidates]:
    """Per method, the rules that can match it, in order: a request is tried only against those, so
    a client's hundred PUT rules cost its GETs nothing (issue 9's cost curve: ~15 µs at 100 rules)."""
    return {
        method: tuple(
            (i, rule) for i, rule in enumerate(rules) if rule.methods is None or method in rule.methods
        )
        for method in get_args(Method)
    }


@dataclass(frozen=True, slots=True)
class Config:
    """Everything the running gateway needs, validated and immutable."""

    settings: Settings
    keys: Mapping[str, UpstreamKey]
    token_index: Mapping[str, TokenRecord]  # lowercase hex sha256 of a token -> its client and lifetime
    clients: Mapping[str, ClientSettings]
    anonymous: ClientSettings | None
    native_allow: frozenset[str]  # casefolded
    source: str
    jwt_clients: tuple[ClientSettings, ...] = ()  # clients with a 'jwt' entry, in config order
    jwks_files: Mapping[str, dict[str, Any]] = field(default_factory=dict)  # client name -> JWKS document
    redis_url: SecretStr | None = field(default=None, repr=False)  # rate_limit.redis, resolved
    generation: int = 1  # 1 at start, +1 per successful reload (gateway/reload.py)
    # client name -> method -> (index, rule) of the rules that can match that method, in order
    rules_by_method: Mapping[str, Mapping[str, RuleCandidates]] = field(default_factory=dict)


def _freeze(
    settings: Settings, keys: dict[str, UpstreamKey], source: str, jwks_files: dict[str, dict[str, Any]]
) -> Config:
    index = {
        t.hash.removeprefix("sha256:"): TokenRecord(
            c.name, t.label, t.not_after.timestamp() if t.not_after is not None else None
        )
        for c in settings.clients
        for t in c.tokens
    }
    anonymous = next((c for c in settings.clients if c.anonymous), None)
    return Config(
        settings=settings,
        keys=keys,
        token_index=index,
        clients={c.name: c for c in settings.clients},
        anonymous=anonymous,
        native_allow=frozenset(m.casefold() for m in settings.native_api.allow),
        source=source,
        jwt_clients=tuple(c for c in settings.clients if c.jwt is not None),
        jwks_files=jwks_files,
        rules_by_method={c.name: _rules_by_method(c.rules) for c in settings.clients},
    )


def _pydantic_problems(exc: ValidationError) -> list[str]:
    """One ``dotted.path: reason`` per error, in the config's own terms.

    Two of pydantic's habits are undone: validator tags in a location (``lax-or-strict[...]``) are
    not part of the config's path, and a list that is "too short" only because its items failed is
    not a problem of its own.
    """
    errors = exc.errors(include_url=False, include_input=False)
    locations = [tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p)) for err in errors]
    problems = []
    for err, loc in zip(errors, locations, strict=True):
        if err["type"] == "too_short" and any(o[: len(loc)] == loc and o != loc for o in locations):
            continue
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
        ours = _OUR_WORDS.get(err["type"])
        ctx = {k: f"{v:g}" if isinstance(v, float) else v for k, v in err.get("ctx", {}).items()}
        message = ours.format(**ctx) if ours else err["msg"].removeprefix("Value error, ")
        problems.append(f"{where or '(root)'}: {message}")
    return problems


# pydantic's texts that read like the library rather than like our config ("Tuple should have at
# least 1 item after validation"): said in our words; {name}s come from the error's context
_DATETIME = "must be a date and time with a zone, e.g. 2027-03-31T00:00:00Z"
_OUR_WORDS = {
    "missing": "required, but not given",
    "extra_forbidden": "unknown setting (a typo? config/example.yaml lists every setting)",
    "too_short": "is empty: give at least {min_length} entry",
    "timezone_aware": _DATETIME,
    "datetime_type": _DATETIME,
    "datetime_parsing": _DATETIME,
    "datetime_from_date_parsing": _DATETIME,
    "string_type": "must be text (a string)",
    "string_too_short": "must not be empty",
    "string_too_long": "is too long: at most {max_length} characters",
    "string_pattern_mismatch": "has characters or a form not allowed here (pattern {pattern})",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number (not inf or nan)",
    "int_parsing_size": "is too large a number",
    "enum": "must be one of {expected}",
    "none_required": "must be empty (null)",
    "set_type": "must be a list",
    "frozen_set_type": "must be a list",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "dict_type": "must be a mapping (name: value)",
    "model_type": "must be a mapping (name: value)",
    "model_attributes_type": "must be a mapping (name: value)",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "literal_error": "must be one of {expected}",
    "greater_than": "must be more than {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than": "must be less than {lt}",
    "less_than_equal": "must be at most {le}",
    "ip_any_network": "must be an IP network such as 10.0.0.0/8",
    "path_type": "must be a file path",
}


def _valid_clients(raw: dict[str, Any]) -> list[tuple[int, ClientSettings]]:
    """Each client entry that is valid on its own, with its index: checks across clients then run even
    when another part of the file is wrong, so one run reports every problem."""
    valid = []
    for i, entry in enumerate(_as_list(raw.get("clients"))):
        try:
            valid.append((i, ClientSettings.model_validate(entry)))
        except ValidationError:
            continue  # pass 1 reported it
    return valid


def _duplicate_token_problems(clients: list[tuple[int, ClientSettings]]) -> list[str]:
    owners: dict[str, str] = {}
    problems = []
    for i, client in clients:
        for t in client.tokens:
            if t.hash in owners and owners[t.hash] != client.name:
                problems.append(f"clients[{i}].tokens: a token hash is also used by {owners[t.hash]!r}")
            owners.setdefault(t.hash, client.name)
    return problems


def build_config(
    raw: object,
    *,
    source: str = "<config>",
    base: Path | None = None,
    env: Mapping[str, str] | None = None,
    resolve_keys: bool = True,
) -> Config:
    """Validate a parsed document and resolve its keys; raise ConfigError with every problem.

    ``resolve_keys=False`` (``explain``, ``check --no-keys``) validates everything but leaves the key
    values unread, as placeholders that can never be sent: a dry run needs key names, not secrets.
    """
    if not isinstance(raw, dict):
        raise ConfigError(source, ["(root): the config must be a mapping"])
    problems: list[str] = []
    settings: Settings | None = None
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        problems += _pydantic_problems(exc)
    problems += _cross_check(raw)
    token_files = _read_token_files(_as_list(raw.get("clients")), base or Path.cwd())
    problems += [p for p in token_files.values() if isinstance(p, str)]
    files = {name: t for name, t in token_files.items() if not isinstance(t, str)}
    # file tokens count as the client's own: one hash in two clients is refused wherever it is written
    clients = [(i, _with_file_tokens(c, files)) for i, c in _valid_clients(raw)]
    problems += _duplicate_token_problems(clients)
    problems += _shadowed_jwt_problems(clients)
    raw_keys = _as_dict(raw.get("keys"))
    keys = (
        _resolve_keys(raw_keys, base or Path.cwd(), os.environ if env is None else env)
        if resolve_keys
        else {str(name): UpstreamKey.build(str(name), SecretStr("unresolved")) for name in raw_keys}
    )
    problems += [p for p in keys.values() if isinstance(p, str)]
    jwks_files = _read_jwks_files(_as_list(raw.get("clients")), base or Path.cwd())
    problems += [p for p in jwks_files.values() if isinstance(p, str)]
    redis_url = _resolve_redis_url(raw, base or Path.cwd()) if resolve_keys else None
    problems += [redis_url] if isinstance(redis_url, str) else []
    problems += _tracing_problems(raw, os.environ if env is None else env)
    if settings is not None:
        settings, ca_problems = _with_ca_file(settings, base or Path.cwd())
        problems += ca_problems
    if problems or settings is None:
        raise ConfigError(source, _unique(problems))
    settings = settings.model_copy(
        update={"clients": tuple(_with_file_tokens(c, files) for c in settings.clients)}
    )
    resolved = {name: k for name, k in keys.items() if isinstance(k, UpstreamKey)}
    documents = {name: d for name, d in jwks_files.items() if isinstance(d, dict)}
    config = _freeze(settings, resolved, source, documents)
    return replace(config, redis_url=redis_url) if isinstance(redis_url, SecretStr) else config


def _with_ca_file(settings: Settings, base: Path) -> tuple[Settings, list[str]]:
    """``upstream.tls.ca_file`` read from the config's folder, and loaded once here so that a missing
    or unreadable bundle is a config problem (``check``, start and reload alike), not a traceback."""
    tls = settings.upstream.tls
    if tls.ca_file is None:
        return settings, []
    path = in_folder(base, tls.ca_file)
    try:
        ssl.create_default_context(cafile=str(path))
    except (OSError, ssl.SSLError) as exc:
        reason = "no PEM certificate in it" if isinstance(exc, ssl.SSLError) else exc.strerror or str(exc)
        return settings, [f"upstream.tls.ca_file: {path} cannot be read as CA certificates ({reason})"]
    upstream = settings.upstream.model_copy(update={"tls": tls.model_copy(update={"ca_file": path})})
    return settings.model_copy(update={"upstream": upstream}), []


def in_folder(base: Path, path: Path) -> Path:
    """A path from the config: relative ones are read from the config file's folder, not the cwd."""
    return path if path.is_absolute() else base / path


OTLP_ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


def tracing_wanted(settings: Settings, env: Mapping[str, str]) -> bool:
    """Whether traces are on (gateway/tracing.py, imported only then): a ``tracing`` section, or the
    standard endpoint variables, unless ``OTEL_SDK_DISABLED=true``."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return settings.tracing is not None or any(env.get(v) for v in OTLP_ENDPOINT_VARS)


def trace_sample_ratio(settings: Settings, env: Mapping[str, str]) -> float | None:
    """The ratio of new traces sampled: ``tracing.sample_ratio``, else None when ``OTEL_TRACES_SAMPLER``
    is set (the SDK reads it), else 1.0."""
    ratio = settings.tracing.sample_ratio if settings.tracing is not None else None
    if ratio is None and not env.get("OTEL_TRACES_SAMPLER"):
        return 1.0
    return ratio


def _tracing_problems(raw: dict[str, Any], env: Mapping[str, str]) -> list[str]:
    """A ``tracing`` section must say where spans go, here or in the standard variables."""
    tracing = raw.get("tracing")
    from_env = any(env.get(v) for v in OTLP_ENDPOINT_VARS)
    if not isinstance(tracing, dict) or tracing.get("otlp_endpoint") or from_env:
        return []
    return ["tracing.otlp_endpoint: required (or set OTEL_EXPORTER_OTLP_ENDPOINT): where spans are sent"]


def _resolve_keys(
    raw_keys: dict[str, Any], base: Path, env: Mapping[str, str]
) -> dict[str, UpstreamKey | str]:
    """Resolve every well-formed key source, even when other parts of the config are wrong."""
    out: dict[str, UpstreamKey | str] = {}
    for name, raw_source in raw_keys.items():
        try:
            source = KeySource.model_validate(raw_source)
        except ValidationError:
            continue  # pass 1 already reported it
        resolved = _resolve_key(str(name), source, base, env)
        out[str(name)] = resolved if isinstance(resolved, str) else UpstreamKey.build(str(name), resolved)
    return out


_REDIS_SCHEMES = ("redis", "rediss", "unix")


def _resolve_redis_url(raw: dict[str, Any], base: Path) -> SecretStr | str | None:
    """The Redis URL (or a problem text, which never includes it) when the redis backend is chosen."""
    section = _as_dict(raw.get("rate_limit"))
    try:
        redis = RedisSettings.model_validate(section.get("redis"))
    except ValidationError:
        return None  # absent, or pass 1 already reported it
    if section.get("backend") != "redis":
        return None
    where = "rate_limit.redis"
    if redis.url_file is not None:
        path = in_folder(base, redis.url_file)
        try:
            url = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            return f"{where}.url_file: cannot read {path}: {_why(exc)}"
    else:
        url = redis.url.get_secret_value() if redis.url else ""
    if urlsplit(url).scheme not in _REDIS_SCHEMES:
        return f"{where}: the URL must start with redis://, rediss:// or unix:// (value not shown)"
    return SecretStr(url)


def _covers(first: JwtSettings, later: JwtSettings) -> bool:
    """True when every token ``later`` accepts is provably accepted by ``first`` too.

    Same issuer and key source, no narrower algorithm list or leeway, every audience of ``later`` also
    accepted by ``first``, and each claim ``first`` requires also required by ``later`` with values
    ``first`` accepts. Anything less is only an overlap, which config order settles.
    """
    if (first.issuer, first.jwks_url, first.jwks_file) != (later.issuer, later.jwks_url, later.jwks_file):
        return False
    if not set(later.algorithms) <= set(first.algorithms) or later.leeway > first.leeway:
        return False
    if not set(later.audience) <= set(first.audience):
        return False
    wanted_later = later.wanted()
    return all(name in wanted_later and wanted_later[name] <= v for name, v in first.wanted().items())


def _shadowed_jwt_problems(clients: list[tuple[int, ClientSettings]]) -> list[str]:
    """A jwt entry that can never match, because an earlier client takes every token it accepts."""
    problems = []
    indexed = [(i, c.name, c.jwt) for i, c in clients if c.jwt is not None]
    for n, (j, _, later) in enumerate(indexed):
        for i, name, first in indexed[:n]:
            if _covers(first, later):
                problems.append(
                    f"clients[{j}].jwt: never matches: every token it accepts is matched first by "
                    f"clients[{i}] ({name!r}); list the narrower client first"
                )
                break
    return problems


_TOKEN_LIST: TypeAdapter[TokenList] = TypeAdapter(TokenList)


def _read_token_files(raw_clients: list[Any], base: Path) -> dict[str, TokenList | str]:
    """Read every ``tokens_file``: a YAML list of entries in the forms ``tokens`` takes."""
    out: dict[str, TokenList | str] = {}
    for i, raw_client in enumerate(raw_clients):
        client = _as_dict(raw_client)
        file = client.get("tokens_file")
        if not isinstance(file, str):
            continue  # absent, or pass 1 reported it
        where, path = f"clients[{i}].tokens_file", in_folder(base, Path(file))
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8"))
            out[str(client.get("name"))] = _TOKEN_LIST.validate_python(document or [])
        except (OSError, UnicodeDecodeError) as exc:
            out[str(client.get("name"))] = f"{where}: cannot read {path}: {_why(exc)}"
        except yaml.YAMLError:
            out[str(client.get("name"))] = f"{where}: {path} is not valid YAML"
        except ValidationError as exc:
            first = _pydantic_problems(exc)[0]
            out[str(client.get("name"))] = f"{where}: {path}: entry {first}"
    return out


def _with_file_tokens(client: ClientSettings, files: Mapping[str, TokenList]) -> ClientSettings:
    """The client with the entries of its ``tokens_file`` added to its ``tokens``."""
    extra = files.get(client.name)
    return client.model_copy(update={"tokens": client.tokens + extra}) if extra else client


def _read_jwks_files(raw_clients: list[Any], base: Path) -> dict[str, dict[str, Any] | str]:
    """Read every well-formed ``jwt.jwks_file`` (a static key set, for issuers the gateway cannot reach)."""
    out: dict[str, dict[str, Any] | str] = {}
    for i, raw_client in enumerate(raw_clients):
        client = _as_dict(raw_client)
        try:
            settings = JwtSettings.model_validate(client.get("jwt"))
        except ValidationError:
            continue  # absent, or pass 1 already reported it
        if settings.jwks_file is not None:
            out[str(client.get("name"))] = _read_jwks(f"clients[{i}].jwt.jwks_file", settings.jwks_file, base)
    return out


def _read_jwks(where: str, file: Path, base: Path) -> dict[str, Any] | str:
    path = in_folder(base, file)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        pyjwt.PyJWKSet.from_dict(document)
    except OSError as exc:
        return f"{where}: cannot read {path}: {_why(exc)}"
    except (ValueError, AttributeError, pyjwt.PyJWTError):
        return f"{where}: {path} is not a usable JWKS (a JSON object {{'keys': [...]}} of valid keys)"
    return document if isinstance(document, dict) else f"{where}: {path} is not a JSON object"


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def read_document(path: Path) -> object:
    """Parse the YAML file; syntax errors become a ConfigError naming the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"(file): cannot read: {_why(exc)}"]) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "(file)"
        raise ConfigError(str(path), [f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}"]) from None


def load_config(path: Path, env: Mapping[str, str] | None = None, *, resolve_keys: bool = True) -> Config:
    """Read, validate and freeze the config at ``path``."""
    return build_config(
        read_document(path), source=str(path), base=path.parent, env=env, resolve_keys=resolve_keys
    )


def token_hash(token: str) -> str:
    """The form a token takes in the config: lowercase hex sha256 of its UTF-8 bytes."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
