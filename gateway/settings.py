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
import os
import re
from base64 import b64encode
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
Method = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

_TOKEN_HASH = re.compile(r"sha256:[0-9a-f]{64}")
_NATIVE_NAME = re.compile(r"[A-Za-z0-9_]+")
_CLIENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_FEED_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~-]*")
_GLOB_SEGMENT = re.compile(r"(\*\*|[A-Za-z0-9._~!$&'()+,;=:@%*-]*)")
_KEY_VALUE = re.compile(r"[\x21-\x7e]+")


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


Glob = Annotated[str, AfterValidator(_check_glob)]
TokenHash = Annotated[str, AfterValidator(_check_token_hash)]
NativeName = Annotated[str, AfterValidator(_check_native_name)]
FeedName = Annotated[str, AfterValidator(_check_feed_name)]
Name = Annotated[str, Field(pattern=_CLIENT_NAME.pattern)]
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


class UpstreamSettings(_Strict):
    url: str
    timeouts: Timeouts = Timeouts()
    tls: Tls = Tls()

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


class AdminListen(_Strict):
    host: str = "127.0.0.1"
    port: Port = 9090


class KeySource(_Strict):
    env: str | None = None
    file: Path | None = None
    value: SecretStr | None = None

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


class ClientSettings(_Strict):
    name: Name
    tokens: tuple[TokenHash, ...] = ()
    anonymous: bool = False
    rules: tuple[Rule, ...] = Field(min_length=1)


class Limits(_Strict):
    max_rewrite_body_bytes: int = Field(default=1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    max_target_bytes: int = Field(default=8192, ge=256, le=65536)
    max_header_count: int = Field(default=100, ge=16, le=1000)
    max_header_bytes: int = Field(default=32 * 1024, ge=4096, le=1024 * 1024)
    max_query_params: int = Field(default=256, ge=1, le=10000)
    max_form_params: int = Field(default=1024, ge=1, le=100000)


class Settings(_Strict):
    upstream: UpstreamSettings
    public_url: str | None = None
    listen: Listen = Listen()
    admin: AdminListen = AdminListen()
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    keys: dict[Annotated[str, Field(pattern=_KEY_NAME.pattern)], KeySource]
    native_api: NativeApi = NativeApi()
    clients: tuple[ClientSettings, ...] = Field(min_length=1)
    limits: Limits = Limits()

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
    return problems


def _check_way_in(where: str, client: dict[str, Any]) -> list[str]:
    """A client is reached by tokens or is the anonymous one — never both, never neither."""
    anonymous, tokens = client.get("anonymous") is True, bool(client.get("tokens"))
    if anonymous and tokens:
        return [f"{where}: an anonymous client takes no tokens"]
    if not anonymous and not tokens:
        return [f"{where}: a client needs 'tokens' or 'anonymous: true'"]
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
        path = source.file if source.file.is_absolute() else base / source.file
        try:
            value = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            return f"{where}.file: cannot read {path}: {type(exc).__name__}"
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

    @classmethod
    def build(cls, name: str, secret: SecretStr) -> UpstreamKey:
        raw = secret.get_secret_value()
        basic = b"Basic " + b64encode(f"api:{raw}".encode())
        return cls(name=name, secret=secret, x_apikey=raw.encode("ascii"), basic=basic)


@dataclass(frozen=True, slots=True)
class Config:
    """Everything the running gateway needs, validated and immutable."""

    settings: Settings
    keys: Mapping[str, UpstreamKey]
    token_index: Mapping[str, str]  # lowercase hex sha256 of a token -> client name
    clients: Mapping[str, ClientSettings]
    anonymous: ClientSettings | None
    native_allow: frozenset[str]  # casefolded
    source: str


def _freeze(settings: Settings, keys: dict[str, UpstreamKey], source: str) -> Config:
    index = {t.removeprefix("sha256:"): c.name for c in settings.clients for t in c.tokens}
    anonymous = next((c for c in settings.clients if c.anonymous), None)
    return Config(
        settings=settings,
        keys=keys,
        token_index=index,
        clients={c.name: c for c in settings.clients},
        anonymous=anonymous,
        native_allow=frozenset(m.casefold() for m in settings.native_api.allow),
        source=source,
    )


def _pydantic_problems(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors(include_url=False, include_input=False):
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
        message = err["msg"].removeprefix("Value error, ")
        problems.append(f"{where or '(root)'}: {message}")
    return problems


def _duplicate_token_problems(settings: Settings) -> list[str]:
    owners: dict[str, str] = {}
    problems = []
    for client in settings.clients:
        for t in client.tokens:
            if t in owners and owners[t] != client.name:
                problems.append(f"clients.{client.name}.tokens: a token hash is also used by {owners[t]!r}")
            owners.setdefault(t, client.name)
    return problems


def build_config(
    raw: object, *, source: str = "<config>", base: Path | None = None, env: Mapping[str, str] | None = None
) -> Config:
    """Validate a parsed document and resolve its keys; raise ConfigError with every problem."""
    if not isinstance(raw, dict):
        raise ConfigError(source, ["(root): the config must be a mapping"])
    problems: list[str] = []
    settings: Settings | None = None
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        problems += _pydantic_problems(exc)
    problems += _cross_check(raw)
    if settings is not None:
        problems += _duplicate_token_problems(settings)
    keys = _resolve_keys(_as_dict(raw.get("keys")), base or Path.cwd(), os.environ if env is None else env)
    problems += [p for p in keys.values() if isinstance(p, str)]
    if problems or settings is None:
        raise ConfigError(source, _unique(problems))
    resolved = {name: k for name, k in keys.items() if isinstance(k, UpstreamKey)}
    return _freeze(settings, resolved, source)


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


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def read_document(path: Path) -> object:
    """Parse the YAML file; syntax errors become a ConfigError naming the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"(file): cannot read: {exc.strerror or type(exc).__name__}"]) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "(file)"
        raise ConfigError(str(path), [f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}"]) from None


def load_config(path: Path, env: Mapping[str, str] | None = None) -> Config:
    """Read, validate and freeze the config at ``path``."""
    return build_config(read_document(path), source=str(path), base=path.parent, env=env)


def token_hash(token: str) -> str:
    """The form a token takes in the config: lowercase hex sha256 of its UTF-8 bytes."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
