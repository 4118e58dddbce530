"""Credential → client: a JWT is verified (workload identity), a gateway token is looked up by its
sha256, no credential means anonymous.

Only hashes of gateway tokens are configured, so a leaked config does not leak a working token. The
lookup key is the hash of what the client sent; comparing fixed-length digests via a dict leaks
nothing useful about any configured token. A credential shaped like a JWT (three base64url parts,
the first a JSON object) goes to the verifier only, never to the hash lookup: one credential, one
way in, so a JWT client and a token client can never both claim it.
"""

from __future__ import annotations

import time
from typing import NamedTuple

from gateway.credentials import Credentials
from gateway.errors import CredentialMissing, TokenExpired, TokenUnknown
from gateway.memo import BoundedMemo
from gateway.settings import ClientSettings, Config, token_hash
from gateway.workload_identity import JwtMatch, JwtVerifier, cached_match, looks_like_jwt, verify_jwt


class Identity(NamedTuple):
    client: ClientSettings
    via: str  # "token" | "jwt" | "anonymous"
    subject: str | None = None  # jwt: the verified `sub`
    issuer: str | None = None  # jwt: the verified `iss`
    matched: tuple[str, ...] = ()  # jwt: the `name=value` constraints that picked the client
    label: str | None = None  # token: the configured label of the token, if any


async def identify(credentials: Credentials, config: Config, verifier: JwtVerifier | None = None) -> Identity:
    """Return the configured client this credential belongs to, or raise 401 (503: issuer down)."""
    token = credentials.token
    if token is None:
        if config.anonymous is None:
            raise CredentialMissing()
        return Identity(config.anonymous, "anonymous")
    # Only a verified JWT is in that cache, and a JWT has dots: an opaque token skips the lookup.
    if (
        verifier is not None
        and config.jwt_clients
        and "." in token
        and (cached := cached_match(token, verifier))
    ):
        return _jwt_identity(cached)
    if looks_like_jwt(token):
        if verifier is None or not config.jwt_clients:
            raise TokenUnknown()
        return _jwt_identity(await verify_jwt(token, verifier))
    record = config.token_index.get(_hashed(token))
    if record is None:
        raise TokenUnknown()
    if record.not_after is not None and time.time() >= record.not_after:
        raise TokenExpired(record.label)
    return Identity(config.clients[record.client], "token", label=record.label)


# sha256 of the same few tokens on every request was ~2 µs of each under load (py-spy, issue 9). The
# memory holds presented tokens, as gateway.needles' cache does: bounded, never logged.
_hashed: BoundedMemo[str, str] = BoundedMemo(token_hash, entries=1024, key_bytes=256)


def _jwt_identity(match: JwtMatch) -> Identity:
    return Identity(match.client, "jwt", match.subject, match.issuer, match.matched)
