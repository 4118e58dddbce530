"""A reload keeps what belongs to unchanged JWT issuers (verified tokens, fetched key sets) and drops
what belongs to changed ones; a kept verified token points at the new config's client and rules."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.settings import build_config
from gateway.workload_identity import JwtVerifier, verify_jwt
from tests.oidc_issuer import OidcIssuer


def _jwt_config(issuer: str, audience: str | list[str], methods: list[str]) -> Any:
    client = {
        "name": "c",
        "jwt": {"issuer": issuer, "audience": audience},
        "rules": [{"methods": methods, "key": "k"}],
    }
    return build_config(
        {"upstream": {"url": "http://p"}, "keys": {"k": {"value": "key"}}, "clients": [client]}
    )


def test_jwt_caches_kept_for_an_unchanged_issuer_dropped_for_a_changed_one() -> None:
    async def scenario(issuer: OidcIssuer) -> None:
        token = issuer.github_token()
        first = JwtVerifier(_jwt_config(issuer.issuer, "proget-gateway", ["GET"]))
        assert (await verify_jwt(token, first)).client.rules[0].methods == ("GET",)
        assert issuer.fetches["jwks"] == 1
        # rules changed, the issuer's settings not: the verified token stays, pointing at the new rules
        second = JwtVerifier(_jwt_config(issuer.issuer, "proget-gateway", ["GET", "HEAD"]))
        second.inherit(first)
        assert (await verify_jwt(token, second)).client.rules[0].methods == ("GET", "HEAD")
        assert issuer.fetches["jwks"] == 1  # nothing fetched again
        # the audience changed: that issuer's verified tokens and keys are dropped
        third = JwtVerifier(_jwt_config(issuer.issuer, ["proget-gateway", "other"], ["GET"]))
        third.inherit(second)
        assert len(third.tokens) == 0
        await verify_jwt(token, third)
        assert issuer.fetches["jwks"] == 2
        for verifier in (first, second, third):
            await verifier.close()

    with OidcIssuer() as issuer:
        asyncio.run(scenario(issuer))
