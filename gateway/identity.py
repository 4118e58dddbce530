"""Credential → client: a gateway token is looked up by its sha256; no credential means anonymous.

Only hashes of tokens are configured, so a leaked config does not leak a working token. The lookup
key is the hash of what the client sent; comparing fixed-length digests via a dict leaks nothing
useful about any configured token.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.credentials import Credentials
from gateway.errors import CredentialMissing, TokenUnknown
from gateway.settings import ClientSettings, Config, token_hash


@dataclass(frozen=True, slots=True)
class Identity:
    client: ClientSettings
    via: str  # "token" | "anonymous"


async def identify(credentials: Credentials, config: Config) -> Identity:
    """Return the configured client this credential belongs to, or raise 401."""
    if credentials.token is None:
        if config.anonymous is None:
            raise CredentialMissing()
        return Identity(config.anonymous, "anonymous")
    name = config.token_index.get(token_hash(credentials.token))
    if name is None:
        raise TokenUnknown()
    return Identity(config.clients[name], "token")
