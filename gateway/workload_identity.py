"""Workload identity: a JWT from a Kubernetes service account or a CI OIDC issuer identifies a client.

No secret needs handing out: a pod already holds a projected service-account token and a CI job can
mint an OIDC token for its run. ``verify_jwt`` checks such a token — signature with the issuer's
published keys, ``iss``, ``aud``, ``exp``/``nbf``/``iat`` with the client's leeway, and the algorithm
against the client's configured list, never the token's own say — and returns the first jwt client,
in config order, whose issuer, audience and claims it meets.

Keys come from ``<issuer>/.well-known/openid-configuration`` → ``jwks_uri``, from ``jwks_url``, or
from ``jwks_file`` (read by settings at start). :class:`JwtVerifier` holds them, and is where the rules
that keep an attacker from turning the gateway against an issuer, or against itself, live:

- only a token whose *unverified* ``iss``, ``aud`` and claims fit some client causes any work, so
  tokens of unconfigured issuers never cause a fetch;
- fetches have a total timeout and a size cap, and follow no redirect;
- an unknown ``kid`` refetches the key set at most once per ``refetch_interval`` per key source, so
  a flood of made-up ``kid`` values is at most one fetch per interval;
- a failed fetch is not retried for ``retry_interval``; meanwhile the last good key set serves (for
  at most ``max_stale``), and with none the answer is 503 ``identity_provider_unavailable``.

Verified results are remembered by the sha256 of the token until ``min(exp, token_ttl)``, in a
bounded cache. Nothing here logs, raises or stores a token.
"""

from __future__ import annotations

import asyncio
import binascii
import hashlib
import json
import logging
import re
import time
from base64 import urlsafe_b64decode
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar

import aiohttp
import jwt
from cachetools import TLRUCache

from gateway.errors import IdentityProviderUnavailable, TokenInvalid, TokenUnknown
from gateway.settings import ClientSettings, Config, JwtSettings, check_fetch_url

log = logging.getLogger("proget_gateway.workload_identity")

MAX_TOKEN_CHARS = 16 * 1024
MAX_DOCUMENT_BYTES = 256 * 1024
MAX_KEYS = 64
MAX_SUBJECT_CHARS = 256
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d{1,10})", re.IGNORECASE)
_REQUIRED = ["exp", "iss", "aud"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Tuning:
    """Bounds of fetching and caching; the defaults suit production, tests shorten them."""

    timeout: float = 5.0  # one fetch, connect to last byte
    min_ttl: float = 60.0  # Cache-Control max-age is clamped into [min_ttl, max_ttl]
    default_ttl: float = 900.0  # when the issuer sends no max-age
    max_ttl: float = 86400.0
    refetch_interval: float = 30.0  # unknown kid: at most one refetch per key source per interval
    retry_interval: float = 10.0  # after a failed fetch, no new attempt for this long
    max_stale: float = 86400.0  # how long the last good keys serve while the issuer is unreachable
    token_ttl: float = 300.0  # verified tokens are remembered at most this long (and never past exp)
    token_cache_size: int = 10_000


@dataclass(frozen=True, slots=True)
class JwtMatch:
    """The client a verified token belongs to, and what decided it (claim names and values, no token)."""

    client: ClientSettings
    issuer: str
    subject: str | None
    matched: tuple[str, ...]
    expires_at: float  # the token's exp, seconds since the epoch


class _FetchFailed(Exception):
    """A discovery document or key set could not be had; ``reason`` names the URL and the cause."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class _Entry(Generic[T]):
    value: T
    ttl: float


# --- the token's shape, unverified --------------------------------------------------------------


def _b64json(part: str) -> dict[str, Any] | None:
    if not _B64URL.fullmatch(part):
        return None
    try:
        value = json.loads(urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (binascii.Error, ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def looks_like_jwt(token: str) -> bool:
    """Three base64url parts, the first a JSON object: the only shape sent to the verifier.

    Opaque gateway tokens (``pgw_…``) contain no dot, so they can never take this path.
    """
    parts = token.split(".")
    return len(parts) == 3 and len(token) <= MAX_TOKEN_CHARS and _b64json(parts[0]) is not None


def peek(token: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Header and payload of a compact JWS, NOT verified: used only to pick candidates and keys."""
    parts = token.split(".")
    if len(parts) != 3 or len(token) > MAX_TOKEN_CHARS:
        return None
    header, payload = _b64json(parts[0]), _b64json(parts[1])
    return (header, payload) if header is not None and payload is not None else None


# --- matching claims ---------------------------------------------------------------------------


def _strings(value: object) -> list[str]:
    """A claim as strings: a string, or the string members of a list (``aud``, ``groups``)."""
    if isinstance(value, str):
        return [value]
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def match_claims(settings: JwtSettings, claims: Mapping[str, Any]) -> tuple[str, ...] | None:
    """``name=value`` for each constraint the claims meet, or None when one is not met.

    A configured list means any of its values; a token claim that is a list matches when any of its
    members is accepted. Values are compared as exact strings.
    """
    if claims.get("iss") != settings.issuer:
        return None
    matched = [f"iss={settings.issuer}"]
    for name, wanted in (("aud", settings.audience), *settings.claims.items()):
        hits = [v for v in _strings(claims.get(name)) if v in wanted]
        if not hits:
            return None
        matched.append(f"{name}={','.join(hits)}")
    return tuple(matched)


def mismatch(settings: JwtSettings, claims: Mapping[str, Any]) -> str | None:
    """The first of a client's checks these (unverified) claims fail, expected vs actual; None when
    all pass. For ``explain``: claim values, never the token or its signature."""
    if claims.get("iss") != settings.issuer:
        return f"issuer: expected {settings.issuer}, the token has {_shown(claims.get('iss'))}"
    for name, wanted in (("aud", settings.audience), *settings.claims.items()):
        if not any(v in wanted for v in _strings(claims.get(name))):
            what = "audience" if name == "aud" else f"claim {name}"
            return f"{what}: expected {' or '.join(wanted)}, the token has {_shown(claims.get(name))}"
    return None


def _shown(value: object, limit: int = 120) -> str:
    if value is None:
        return "none"
    text = ", ".join(_strings(value)) if isinstance(value, str | list) else repr(value)
    return text[:limit] or "none"


def _candidates(clients: Iterable[ClientSettings], claims: Mapping[str, Any]) -> list[ClientSettings]:
    return [c for c in clients if c.jwt is not None and match_claims(c.jwt, claims) is not None]


# --- keys ----------------------------------------------------------------------------------------


class KeySet:
    """An issuer's signing keys (JWKS), each turned into a PyJWK for one algorithm on first use.

    A key is built for the algorithm the *configured list* allowed for this token; a key that
    names its own ``alg`` is used for that algorithm only, and a key of another type fails to build,
    so an RSA public key can never become an HMAC secret or an EC key.
    """

    def __init__(self, document: Mapping[str, Any]) -> None:
        keys = document.get("keys")
        usable = (
            [k for k in keys if isinstance(k, dict) and k.get("use", "sig") == "sig"]
            if isinstance(keys, list)
            else []
        )
        self._jwks: list[dict[str, Any]] = usable[:MAX_KEYS]
        self._built: dict[tuple[int, str], jwt.PyJWK | None] = {}

    def __len__(self) -> int:
        return len(self._jwks)

    def find(self, kid: str | None, alg: str) -> list[jwt.PyJWK]:
        """Keys that may have signed a token with this header: the ``kid``'s, or all when it names none."""
        found = []
        for i, jwk in enumerate(self._jwks):
            if kid is None or jwk.get("kid") == kid:
                key = self._build(i, alg)
                if key is not None:
                    found.append(key)
        return found

    def usable_for(self, algorithms: Iterable[str]) -> bool:
        return any(self.find(None, alg) for alg in algorithms)

    def _build(self, i: int, alg: str) -> jwt.PyJWK | None:
        if (i, alg) not in self._built:
            jwk = self._jwks[i]
            key = None
            if jwk.get("alg") in (None, alg):
                try:
                    key = jwt.PyJWK(jwk, alg)
                except jwt.PyJWTError:
                    key = None
            self._built[(i, alg)] = key
        return self._built[(i, alg)]


def _entry_expiry(_key: str, entry: _Entry[Any], now: float) -> float:
    return now + entry.ttl


class JwtVerifier:
    """Process-wide state of JWT verification: key sets, discovery documents, verified tokens.

    Created with the proxy app and closed in its lifespan; ``explain`` and ``check`` use one briefly.
    """

    def __init__(
        self, config: Config, tuning: Tuning | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.clients = config.jwt_clients
        self._by_name = {c.name: c for c in self.clients}
        self._issuers = _issuer_signatures(config)
        self.tuning = tuning or Tuning()
        self._clock = clock
        self._static = {name: KeySet(doc) for name, doc in config.jwks_files.items()}
        self.tokens: TLRUCache[str, JwtMatch] = TLRUCache(
            self.tuning.token_cache_size, self._token_expiry, timer=clock
        )
        sources = max(1, 2 * len(self.clients))
        self._keys: TLRUCache[str, _Entry[KeySet]] = TLRUCache(sources, _entry_expiry, timer=clock)
        self._jwks_uris: TLRUCache[str, _Entry[str]] = TLRUCache(sources, _entry_expiry, timer=clock)
        self._last_good: dict[str, tuple[KeySet, float]] = {}
        self._retry_at: dict[str, float] = {}
        self._refetch_at: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._http()

    def _http(self) -> aiohttp.ClientSession:
        """The HTTP session, made on first use inside the running loop (proxy environment ignored)."""
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=self.tuning.timeout, connect=self.tuning.timeout)
            self._session = aiohttp.ClientSession(timeout=timeout, trust_env=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> JwtVerifier:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def inherit(self, previous: JwtVerifier) -> None:
        """Take over what a config reload did not change (gateway/reload.py).

        An issuer is unchanged when its jwt clients — names, jwt settings, static key sets, order — are
        the same: which client a token of that issuer matches cannot have changed, so its verified
        tokens stay cached (their client re-pointed at the new settings, whose rules may differ) and
        its fetched key sets are kept. Everything of a changed or removed issuer is dropped. The HTTP
        session moves over; ``previous`` makes a new one if a request it still serves needs it.
        """
        kept = {i for i, sig in self._issuers.items() if previous._issuers.get(i) == sig}
        for digest, match in list(previous.tokens.items()):
            if match.issuer not in kept:
                previous.tokens.pop(digest, None)
        self.tokens = previous.tokens
        sources = {_source(_jwt(c)) for c in self.clients if _jwt(c).issuer in kept}
        discovery = {_jwt(c).discovery_url for c in self.clients if _jwt(c).issuer in kept}
        _keep(self._keys, previous._keys, sources)
        _keep(self._jwks_uris, previous._jwks_uris, discovery)
        _keep(self._last_good, previous._last_good, sources)
        _keep(self._retry_at, previous._retry_at, sources)
        _keep(self._refetch_at, previous._refetch_at, sources)
        self._session, previous._session = previous._session, None

    def current(self, match: JwtMatch) -> JwtMatch:
        """A cached match, pointing at this config's settings of its client."""
        client = self._by_name.get(match.client.name, match.client)
        return match if client is match.client else replace(match, client=client)

    def _token_expiry(self, _key: str, match: JwtMatch, now: float) -> float:
        return now + min(self.tuning.token_ttl, match.expires_at - time.time())

    # --- keys for one client ---

    async def find_keys(self, client: ClientSettings, kid: str | None, alg: str) -> list[jwt.PyJWK]:
        """The client's issuer keys fitting this header; an unknown kid refetches (rate-limited) once."""
        settings = _jwt(client)
        if settings.jwks_file is not None:
            return self._static[client.name].find(kid, alg)
        keys, fetched_now = await self._keyset(settings, refresh=False)
        found = keys.find(kid, alg)
        if not found and not fetched_now:
            keys, _ = await self._keyset(settings, refresh=True)
            found = keys.find(kid, alg)
        return found

    async def _keyset(self, settings: JwtSettings, *, refresh: bool) -> tuple[KeySet, bool]:
        """Fresh keys from the cache, else fetched; stale ones while the issuer fails; else 503."""
        source = _source(settings)
        async with self._locks.setdefault(source, asyncio.Lock()):
            now = self._clock()
            cached = self._keys.get(source)
            if cached is not None and not (refresh and now >= self._refetch_at.get(source, 0.0)):
                return cached.value, False
            if now < self._retry_at.get(source, 0.0):
                return self._stale(source, now), False
            if refresh:
                self._refetch_at[source] = now + self.tuning.refetch_interval
            try:
                keys = await self._fetch_keys(settings)
            except _FetchFailed as failure:
                log.warning("identity provider %s: %s", settings.issuer, failure.reason)
                self._retry_at[source] = now + self.tuning.retry_interval
                return self._stale(source, now), False
            return keys, True

    def _stale(self, source: str, now: float) -> KeySet:
        last = self._last_good.get(source)
        if last is None or now - last[1] > self.tuning.max_stale:
            raise IdentityProviderUnavailable()
        return last[0]

    async def _fetch_keys(self, settings: JwtSettings) -> KeySet:
        url = settings.jwks_url or await self._jwks_uri(settings)
        document, ttl = await self._get_json(url)
        keys = KeySet(document)
        if not len(keys):  # whether a key fits a client's algorithms is that client's matter (probe)
            raise _FetchFailed(f"{url}: no signing keys")
        source = _source(settings)
        self._keys[source] = _Entry(keys, ttl)
        self._last_good[source] = (keys, self._clock())
        return keys

    async def _jwks_uri(self, settings: JwtSettings) -> str:
        """The ``jwks_uri`` of the issuer's discovery document, which must name the same issuer."""
        url = settings.discovery_url
        cached = self._jwks_uris.get(url)
        if cached is not None:
            return cached.value
        document, ttl = await self._get_json(url)
        if document.get("issuer") != settings.issuer:
            raise _FetchFailed(f"{url}: the document names another issuer")
        jwks_uri = document.get("jwks_uri")
        try:
            check_fetch_url(jwks_uri if isinstance(jwks_uri, str) else "")
        except ValueError as exc:
            raise _FetchFailed(f"{url}: jwks_uri {exc}") from None
        self._jwks_uris[url] = _Entry(str(jwks_uri), ttl)
        return str(jwks_uri)

    async def _get_json(self, url: str) -> tuple[dict[str, Any], float]:
        """GET a JSON object, size-capped, no redirects; its cache lifetime from Cache-Control."""
        try:
            async with self._http().get(url, allow_redirects=False) as response:
                if response.status != 200:
                    raise _FetchFailed(f"{url}: HTTP {response.status}")
                body = await _read_capped(response)
                ttl = self._ttl(response.headers.get("cache-control"))
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _FetchFailed(f"{url}: {_fetch_reason(exc, self.tuning.timeout)}") from None
        try:
            document = json.loads(body)
        except ValueError:
            raise _FetchFailed(f"{url}: not JSON") from None
        if not isinstance(document, dict):
            raise _FetchFailed(f"{url}: not a JSON object")
        return document, ttl

    def _ttl(self, cache_control: str | None) -> float:
        t = self.tuning
        if cache_control is None:
            return t.default_ttl
        if "no-store" in cache_control.lower() or "no-cache" in cache_control.lower():
            return t.min_ttl
        found = _MAX_AGE.search(cache_control)
        return min(t.max_ttl, max(t.min_ttl, float(found.group(1)))) if found else t.default_ttl

    # --- for `check` ---

    async def probe(self) -> list[str]:
        """Fetch every key source once, bypassing the caches; one problem text per failure."""
        problems: list[str] = []
        outcome: dict[str, KeySet | str] = {}
        for client in self.clients:
            settings = _jwt(client)
            where = f"clients.{client.name}.jwt"
            if settings.jwks_file is not None:
                keys: KeySet | str = self._static[client.name]
            else:
                source = _source(settings)
                if source not in outcome:
                    outcome[source] = await self._probe_source(settings)
                keys = outcome[source]
            if isinstance(keys, str):
                problems.append(f"{where}: {keys}")
            elif not keys.usable_for(settings.algorithms):
                problems.append(f"{where}: no key fits algorithms {', '.join(settings.algorithms)}")
        return problems

    async def _probe_source(self, settings: JwtSettings) -> KeySet | str:
        try:
            return await self._fetch_keys(settings)
        except _FetchFailed as failure:
            return failure.reason


async def _read_capped(response: aiohttp.ClientResponse) -> bytes:
    body = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > MAX_DOCUMENT_BYTES:
            raise _FetchFailed(f"{response.url}: larger than {MAX_DOCUMENT_BYTES} bytes")
    return bytes(body)


def _fetch_reason(exc: BaseException, timeout: float) -> str:
    """Why a fetch failed, in our words (not ``ClientConnectorDNSError``)."""
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "the host name does not resolve"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
        return "TLS failed (certificate not trusted, or not TLS)"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "cannot connect"
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return f"no answer within {timeout:g} s"
    return "the connection failed before a whole answer arrived"


def _keep(mine: MutableMapping[str, T], theirs: Mapping[str, T], wanted: set[str]) -> None:
    for key, value in list(theirs.items()):
        if key in wanted:
            mine[key] = value


def _issuer_signatures(config: Config) -> dict[str, tuple[object, ...]]:
    """Per issuer, what decides which of its clients a token matches: clients, settings, key files."""
    out: dict[str, tuple[object, ...]] = {}
    for client in config.jwt_clients:
        settings = _jwt(client)
        entry = (client.name, settings, config.jwks_files.get(client.name))
        out[settings.issuer] = (*out.get(settings.issuer, ()), entry)
    return out


def _jwt(client: ClientSettings) -> JwtSettings:
    if client.jwt is None:  # only jwt clients reach the verifier
        raise TypeError(f"client {client.name!r} has no jwt settings")
    return client.jwt


def _source(settings: JwtSettings) -> str:
    """One key source per JWKS location: clients of one issuer share its keys and its rate limits."""
    return settings.jwks_url or settings.discovery_url


# --- verification ----------------------------------------------------------------------------------

_REASONS: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.ExpiredSignatureError, "The token has expired."),
    (jwt.ImmatureSignatureError, "The token is not valid yet."),
    (jwt.InvalidAudienceError, "The token's audience is not accepted."),
    (jwt.InvalidIssuerError, "The token's issuer is not accepted."),
    (jwt.MissingRequiredClaimError, "The token lacks a required claim (exp, iss, aud)."),
    (jwt.InvalidAlgorithmError, "The token's signature algorithm is not accepted."),
)


def _invalid(error: jwt.PyJWTError) -> TokenInvalid:
    """Our own fixed texts: the library's messages are not ours to promise free of token content."""
    for kind, text in _REASONS:
        if isinstance(error, kind):
            return TokenInvalid(text)
    return TokenInvalid()


async def _verified_claims(
    token: str, header: Mapping[str, Any], client: ClientSettings, verifier: JwtVerifier
) -> dict[str, Any]:
    settings = _jwt(client)
    alg, kid = header.get("alg"), header.get("kid")
    if not isinstance(alg, str) or alg not in settings.algorithms:
        raise TokenInvalid("The token's signature algorithm is not accepted.")
    if kid is not None and not isinstance(kid, str):
        raise TokenInvalid("The token's key id is malformed.")
    keys = await verifier.find_keys(client, kid, alg)
    if not keys:
        raise TokenInvalid("The issuer publishes no key for this token's key id and algorithm.")
    for key in keys:
        try:
            return jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=list(settings.audience),
                issuer=settings.issuer,
                leeway=settings.leeway,
                options={"require": _REQUIRED},
            )
        except jwt.InvalidSignatureError:
            continue  # no kid: the next key of the set may be the one
        except jwt.PyJWTError as error:
            raise _invalid(error) from None
    raise TokenInvalid("The token's signature does not verify with the issuer's keys.")


def _result(client: ClientSettings, claims: Mapping[str, Any], matched: tuple[str, ...]) -> JwtMatch:
    sub = claims.get("sub")
    return JwtMatch(
        client=client,
        issuer=_jwt(client).issuer,
        subject=sub[:MAX_SUBJECT_CHARS] if isinstance(sub, str) else None,
        matched=matched,
        expires_at=float(claims["exp"]),
    )


def cached_match(token: str, verifier: JwtVerifier) -> JwtMatch | None:
    """The match of a token verified before and not yet expired: a dictionary lookup by its sha256,
    without decoding its header first (that cost ~13 µs per request for a cached client)."""
    known = verifier.tokens.get(hashlib.sha256(token.encode("utf-8")).hexdigest())
    return None if known is None else verifier.current(known)


async def verify_jwt(token: str, verifier: JwtVerifier) -> JwtMatch:
    """The first jwt client, in config order, whose issuer, audience and claims this token meets.

    Raises TokenInvalid (undecodable, bad signature, expired, wrong algorithm…), TokenUnknown (no
    client fits it; tokens of unconfigured issuers always end here, without any fetch) and
    IdentityProviderUnavailable (no keys: the issuer is unreachable and none are cached).
    """
    known = cached_match(token, verifier)
    if known is not None:
        return known
    digest = hashlib.sha256(token.encode("utf-8")).hexdigest()
    matches = await _verify(token, verifier, first_only=True)
    verifier.tokens[digest] = matches[0]
    return matches[0]


async def all_matches(token: str, verifier: JwtVerifier) -> list[JwtMatch]:
    """Every jwt client the token verifies for, in config order (``explain`` shows the overlap)."""
    return await _verify(token, verifier, first_only=False)


async def _verify(token: str, verifier: JwtVerifier, *, first_only: bool) -> list[JwtMatch]:
    parts = peek(token)
    if parts is None:
        raise TokenInvalid("The credential looks like a JWT but cannot be decoded.")
    header, unverified = parts
    failure: TokenInvalid | None = None
    matches: list[JwtMatch] = []
    for client in _candidates(verifier.clients, unverified):
        try:
            claims = await _verified_claims(token, header, client, verifier)
        except TokenInvalid as error:
            failure = failure or error
            continue
        matched = match_claims(_jwt(client), claims)
        if matched is not None:
            matches.append(_result(client, claims, matched))
            if first_only:
                break
    if not matches:
        raise failure or TokenUnknown("No client of this gateway accepts this token's issuer and claims.")
    return matches
