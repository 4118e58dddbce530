"""JWT verification and key handling against a real local OIDC issuer stand-in (tests/oidc_issuer.py).

The verifier runs in-process with a fake monotonic clock, so cache lifetimes and rate limits are
tested by moving the clock, not by sleeping.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from gateway import workload_identity
from gateway.credentials import Credentials
from gateway.errors import IdentityProviderUnavailable, TokenInvalid, TokenUnknown
from gateway.identity import identify
from gateway.settings import Config, ConfigError, build_config, token_hash
from gateway.workload_identity import (
    JwtMatch,
    JwtVerifier,
    Tuning,
    all_matches,
    looks_like_jwt,
    peek,
    verify_jwt,
)
from tests.oidc_issuer import KUBERNETES_ISSUER, OidcIssuer

T = TypeVar("T")
AUD = "proget-gateway"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def jwt_client(name: str, issuer: str, **jwt: Any) -> dict[str, Any]:
    return {"name": name, "jwt": {"issuer": issuer, "audience": AUD, **jwt}, "rules": [{"key": "k"}]}


def config(*clients: dict[str, Any], base: Path | None = None) -> Config:
    raw = {"upstream": {"url": "http://p"}, "keys": {"k": {"value": "key"}}, "clients": list(clients)}
    return build_config(raw, env={}, base=base)


def problems(*clients: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config(*clients)
    return info.value.problems


class Harness:
    """One verifier (fake clock) for a config; ``verify`` runs it inside an event loop."""

    def __init__(self, cfg: Config, tuning: Tuning | None = None) -> None:
        self.clock = Clock()
        self.verifier = JwtVerifier(cfg, tuning, clock=self.clock)
        self.loop = asyncio.new_event_loop()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def verify(self, token: str) -> JwtMatch:
        return self.call(verify_jwt(token, self.verifier))

    def fails(self, token: str, error: type[Exception]) -> Exception:
        with pytest.raises(error) as info:
            self.verify(token)
        return info.value

    def close(self) -> None:
        self.call(self.verifier.close())
        self.loop.close()


@pytest.fixture
def issuer() -> Iterator[OidcIssuer]:
    with OidcIssuer(cache_control="max-age=300") as server:
        yield server


@pytest.fixture
def other() -> Iterator[OidcIssuer]:
    """A second, working issuer that the config does not name."""
    with OidcIssuer(path="/unconfigured") as server:
        yield server


def harness(request: pytest.FixtureRequest, cfg: Config, tuning: Tuning | None = None) -> Harness:
    h = Harness(cfg, tuning)
    request.addfinalizer(h.close)
    return h


@pytest.fixture
def gh(request: pytest.FixtureRequest, issuer: OidcIssuer) -> Harness:
    """Two overlapping GitHub-style clients: main branch of acme/payments first, any branch after."""
    cfg = config(
        jwt_client(
            "payments-main", issuer.issuer, claims={"repository": "acme/payments", "ref": "refs/heads/main"}
        ),
        jwt_client("payments-any", issuer.issuer, claims={"repository": "acme/payments"}),
        jwt_client("billing-or-docs", issuer.issuer, claims={"repository": ["acme/billing", "acme/docs"]}),
    )
    return harness(request, cfg)


# --- shape --------------------------------------------------------------------------------------


def test_shape_decides_which_path_a_credential_takes(issuer: OidcIssuer) -> None:
    token = issuer.github_token()
    assert looks_like_jwt(token)
    assert looks_like_jwt(issuer.forge_none(issuer.github_claims()))
    assert not looks_like_jwt("pgw_" + "A" * 43)
    assert not looks_like_jwt("a.b.c")
    assert not looks_like_jwt("e30.e30.e30.e30")  # four parts
    assert not looks_like_jwt("e3+.e30.sig")  # not base64url
    header, payload = peek(token) or ({}, {})
    assert header["alg"] == "RS256" and payload["repository"] == "acme/payments"


# --- the good paths --------------------------------------------------------------------------------


def test_github_token_matches_first_client_in_order(gh: Harness, issuer: OidcIssuer) -> None:
    match = gh.verify(issuer.github_token())
    assert match.client.name == "payments-main"
    assert match.subject == "repo:acme/payments:ref:refs/heads/main"
    assert match.issuer == issuer.issuer
    assert match.matched == (
        f"iss={issuer.issuer}",
        "aud=proget-gateway",
        "repository=acme/payments",
        "ref=refs/heads/main",
    )


def test_overlap_order_decides_and_all_matches_shows_both(gh: Harness, issuer: OidcIssuer) -> None:
    token = issuer.github_token()
    names = [m.client.name for m in gh.call(all_matches(token, gh.verifier))]
    assert names == ["payments-main", "payments-any"]
    assert gh.verify(issuer.github_token(ref="refs/heads/feature")).client.name == "payments-any"


def test_claim_list_means_any_of(gh: Harness, issuer: OidcIssuer) -> None:
    assert gh.verify(issuer.github_token(repository="acme/billing")).client.name == "billing-or-docs"
    assert gh.verify(issuer.github_token(repository="acme/docs")).client.name == "billing-or-docs"
    error = gh.fails(issuer.github_token(repository="acme/other"), TokenUnknown)
    assert error.status == 401


def test_token_claim_list_matches_any_member(request: pytest.FixtureRequest, issuer: OidcIssuer) -> None:
    h = harness(request, config(jwt_client("admins", issuer.issuer, claims={"groups": "proget-admins"})))
    claims = issuer.github_claims(groups=["devs", "proget-admins"])
    assert h.verify(issuer.mint(claims)).matched[-1] == "groups=proget-admins"
    h.fails(issuer.mint(issuer.github_claims(groups=["devs"])), TokenUnknown)
    h.fails(issuer.mint(issuer.github_claims(groups={"proget-admins": 1})), TokenUnknown)


def test_kubernetes_es256_token_with_audience_list(
    request: pytest.FixtureRequest, issuer: OidcIssuer
) -> None:
    cfg = config(
        jwt_client(
            "build-pods",
            issuer.issuer,
            audience=["other", AUD],
            claims={"sub": "system:serviceaccount:ci:builder"},
            algorithms=["ES256"],
        )
    )
    h = harness(request, cfg)
    match = h.verify(issuer.kubernetes_token())
    assert (match.client.name, match.subject) == ("build-pods", "system:serviceaccount:ci:builder")
    h.fails(issuer.kubernetes_token(service_account="deployer"), TokenUnknown)
    h.fails(issuer.kubernetes_token(audience=["https://kubernetes.default.svc"]), TokenUnknown)
    # the same claims signed with RS256 are refused: the client allows ES256 only
    error = h.fails(issuer.mint(issuer.kubernetes_claims(), kind="rsa"), TokenInvalid)
    assert "algorithm" in str(error)


def test_jwks_file_verifies_without_any_fetch(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    cluster = OidcIssuer(issuer=KUBERNETES_ISSUER)  # never started: its keys are only in the file
    cluster.write_jwks(tmp_path / "jwks.json")
    cfg = config(jwt_client("pods", KUBERNETES_ISSUER, jwks_file="jwks.json"), base=tmp_path)
    h = harness(request, cfg)
    assert h.verify(cluster.kubernetes_token()).client.name == "pods"
    cluster.rotate("ec")
    assert "key" in str(h.fails(cluster.kubernetes_token(), TokenInvalid))


# --- refusals -------------------------------------------------------------------------------------


def test_wrong_audience_is_no_match(gh: Harness, issuer: OidcIssuer) -> None:
    gh.fails(issuer.github_token(audience="https://github.com/acme"), TokenUnknown)
    assert issuer.fetches["jwks"] == 0  # nothing fits, so nothing is fetched


def test_expired_and_not_yet_valid_respect_leeway(gh: Harness, issuer: OidcIssuer) -> None:
    expired = issuer.github_claims(**issuer.times(ttl=300, age=360))  # exp 60 s ago
    assert "expired" in str(gh.fails(issuer.mint(expired), TokenInvalid))
    within = issuer.github_claims(**issuer.times(ttl=300, age=310))  # exp 10 s ago, leeway 30 s
    assert gh.verify(issuer.mint(within)).client.name == "payments-main"
    future = issuer.github_claims(nbf=int(issuer.times()["iat"]) + 120)
    assert "not valid yet" in str(gh.fails(issuer.mint(future), TokenInvalid))
    issued_later = issuer.github_claims(iat=int(issuer.times()["iat"]) + 120)
    assert "not valid yet" in str(gh.fails(issuer.mint(issued_later), TokenInvalid))
    no_exp = {k: v for k, v in issuer.github_claims().items() if k != "exp"}
    assert "claim" in str(gh.fails(issuer.mint(no_exp), TokenInvalid))


def test_alg_none_and_hmac_with_public_key_are_refused_before_any_fetch(
    gh: Harness, issuer: OidcIssuer
) -> None:
    claims = issuer.github_claims()
    assert "algorithm" in str(gh.fails(issuer.forge_none(claims), TokenInvalid))
    assert "algorithm" in str(gh.fails(issuer.forge_hs256_with_public_key(claims), TokenInvalid))
    assert issuer.fetches["jwks"] == 0


def test_tampered_payload_fails_the_signature(gh: Harness, issuer: OidcIssuer) -> None:
    header, _, signature = issuer.github_token(repository="acme/docs").split(".")
    _, payload, _ = issuer.github_token().split(".")
    assert "signature" in str(gh.fails(f"{header}.{payload}.{signature}", TokenInvalid))


def test_unconfigured_issuer_never_matches(gh: Harness, issuer: OidcIssuer, other: OidcIssuer) -> None:
    gh.fails(other.github_token(), TokenUnknown)
    assert other.fetches.total() == 0
    # its key claiming to be the configured issuer, even under the configured key's kid: refused
    gh.verify(issuer.github_token())  # warm the configured issuer's keys
    forged = other.mint(issuer.github_claims(), kid=issuer.signing["rsa"])
    assert "signature" in str(gh.fails(forged, TokenInvalid))
    assert other.fetches.total() == 0


def test_undecodable_jwt_is_invalid(gh: Harness) -> None:
    gh.fails("eyJhbGciOiJSUzI1NiJ9.not-json.sig", TokenInvalid)


# --- keys: rotation, flood, outage, cache lifetimes -------------------------------------------------


def test_unknown_kid_refetches_once_then_rate_limited(gh: Harness, issuer: OidcIssuer) -> None:
    gh.verify(issuer.github_token())
    assert issuer.fetches["jwks"] == 1
    issuer.rotate("rsa")
    assert gh.verify(issuer.github_token(ref="refs/heads/x")).client.name == "payments-any"
    assert issuer.fetches["jwks"] == 2
    issuer.rotate("rsa")
    gh.fails(issuer.github_token(ref="refs/heads/y"), TokenInvalid)  # within the interval: no fetch
    assert issuer.fetches["jwks"] == 2
    gh.clock.now += Tuning().refetch_interval
    assert gh.verify(issuer.github_token(ref="refs/heads/y")).client.name == "payments-any"
    assert issuer.fetches["jwks"] == 3
    assert issuer.fetches["discovery"] == 1  # only the key set is refetched


def test_kid_flood_is_bounded(gh: Harness, issuer: OidcIssuer) -> None:
    claims = issuer.github_claims()
    for i in range(50):
        gh.fails(issuer.mint(claims, kid=f"random-{i}"), TokenInvalid)
    assert issuer.fetches["jwks"] == 2  # the first fetch, and one refetch for an unknown kid
    gh.clock.now += 5
    for i in range(50):
        gh.fails(issuer.mint(claims, kid=f"again-{i}"), TokenInvalid)
    assert issuer.fetches["jwks"] == 2


def test_concurrent_unknown_kids_share_one_refetch(gh: Harness, issuer: OidcIssuer) -> None:
    gh.verify(issuer.github_token())
    claims = issuer.github_claims()
    tokens = [issuer.mint(claims, kid=f"k{i}") for i in range(20)]

    async def all_at_once() -> list[BaseException | JwtMatch]:
        return await asyncio.gather(*(verify_jwt(t, gh.verifier) for t in tokens), return_exceptions=True)

    outcomes = gh.call(all_at_once())
    assert all(isinstance(o, TokenInvalid) for o in outcomes)
    assert issuer.fetches["jwks"] == 2


def test_cache_control_max_age_is_honoured_within_bounds(
    request: pytest.FixtureRequest, issuer: OidcIssuer
) -> None:
    h = harness(request, config(jwt_client("c", issuer.issuer)))
    issuer.cache_control = "public, max-age=120"
    h.verify(issuer.github_token())
    h.clock.now += 100
    h.verify(issuer.github_token())
    assert issuer.fetches["jwks"] == 1
    h.clock.now += 30  # 130 s > max-age 120
    h.verify(issuer.github_token())
    assert issuer.fetches["jwks"] == 2
    issuer.cache_control = "max-age=1"  # clamped up to min_ttl (60 s)
    h.clock.now += 200
    h.verify(issuer.github_token())
    h.clock.now += 30
    h.verify(issuer.github_token())
    assert issuer.fetches["jwks"] == 3


def test_issuer_down_with_warm_cache_keeps_working(gh: Harness, issuer: OidcIssuer) -> None:
    gh.verify(issuer.github_token())
    issuer.stop()
    assert gh.verify(issuer.github_token(ref="refs/heads/a")).client.name == "payments-any"
    gh.clock.now += 3600  # keys expired; the issuer is down: the last good keys serve
    assert gh.verify(issuer.github_token(ref="refs/heads/b")).client.name == "payments-any"
    gh.clock.now += Tuning().max_stale  # too old to trust any longer
    gh.fails(issuer.github_token(ref="refs/heads/c"), IdentityProviderUnavailable)


def test_issuer_down_with_cold_cache_is_503_and_recovers(gh: Harness, issuer: OidcIssuer) -> None:
    token = issuer.github_token()
    issuer.stop()
    error = gh.fails(token, IdentityProviderUnavailable)
    assert (error.status, error.code) == (503, "identity_provider_unavailable")
    issuer.start()  # back, but a failed fetch is not retried within retry_interval
    gh.fails(token, IdentityProviderUnavailable)
    assert issuer.fetches.total() == 0
    gh.clock.now += Tuning().retry_interval
    assert gh.verify(token).client.name == "payments-main"


def test_broken_issuer_answers_are_failures(
    request: pytest.FixtureRequest, issuer: OidcIssuer, other: OidcIssuer
) -> None:
    h = harness(request, config(jwt_client("c", issuer.issuer)))
    issuer.status = 500
    h.fails(issuer.github_token(), IdentityProviderUnavailable)
    # a discovery document that names another issuer is not believed
    impostor = config(jwt_client("c", other.issuer))
    other_h = harness(request, impostor)
    other._issuer = "https://token.actions.githubusercontent.com"
    token = other.mint({**other.github_claims(), "iss": other.url})
    other_h.fails(token, IdentityProviderUnavailable)
    assert other.fetches["jwks"] == 0


def test_oversized_key_set_is_refused(request: pytest.FixtureRequest, issuer: OidcIssuer) -> None:
    h = harness(request, config(jwt_client("c", issuer.issuer)))
    issuer.padding = workload_identity.MAX_DOCUMENT_BYTES
    h.fails(issuer.github_token(), IdentityProviderUnavailable)
    assert issuer.fetches["jwks"] == 1


def test_verified_tokens_are_cached_by_hash_until_exp(
    request: pytest.FixtureRequest, issuer: OidcIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = harness(request, config(jwt_client("c", issuer.issuer)))
    token = issuer.mint(issuer.github_claims(**issuer.times(ttl=20)))
    h.verify(token)
    digest = hashlib.sha256(token.encode()).hexdigest()
    assert list(h.verifier.tokens.keys()) == [digest]

    def no_second_verification(*args: object, **kwargs: object) -> None:
        raise AssertionError("verified again")

    monkeypatch.setattr(workload_identity.jwt, "decode", no_second_verification)
    h.clock.now += 10
    assert h.verify(token).client.name == "c"
    h.clock.now += 15  # past the token's exp (20 s): no longer cached
    with pytest.raises(AssertionError, match="verified again"):
        h.verify(token)


def test_token_cache_is_bounded(request: pytest.FixtureRequest, issuer: OidcIssuer) -> None:
    h = harness(request, config(jwt_client("c", issuer.issuer)), Tuning(token_cache_size=3))
    for i in range(6):
        h.verify(issuer.github_token(ref=f"refs/heads/{i}"))
    assert len(h.verifier.tokens) == 3


def test_nothing_logged_or_raised_contains_the_token(
    gh: Harness, issuer: OidcIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tokens = [issuer.github_token(), issuer.github_token(audience="x")]
    issuer.stop()
    texts = []
    for token in tokens:
        with pytest.raises(Exception) as info:
            gh.verify(token)
        texts.append(repr(info.value) + str(info.value))
    assert caplog.records, "the failed fetch is logged"
    blob = caplog.text + "".join(texts)
    for token in tokens:
        for part in token.split("."):
            assert part not in blob


# --- check and identity --------------------------------------------------------------------------


def test_probe_reports_each_unreachable_issuer_once(
    request: pytest.FixtureRequest, issuer: OidcIssuer, other: OidcIssuer
) -> None:
    cfg = config(
        jwt_client("a", issuer.issuer),
        jwt_client("b", other.issuer),
        jwt_client("c", other.issuer, audience="another-audience"),
        jwt_client("d", issuer.issuer, audience="another-audience", algorithms=["PS256"]),
    )
    other.stop()
    h = harness(request, cfg)
    found = h.call(h.verifier.probe())
    assert [p.split(":")[0] for p in found] == ["clients.b.jwt", "clients.c.jwt", "clients.d.jwt"]
    assert found[0].endswith(": cannot connect")  # our words, not ClientConnectorError
    assert found[2] == "clients.d.jwt: no key fits algorithms PS256"
    assert (issuer.fetches["discovery"], issuer.fetches["jwks"]) == (1, 1)


def test_identify_routes_jwts_to_the_verifier_only(
    request: pytest.FixtureRequest, issuer: OidcIssuer
) -> None:
    token = issuer.github_token()
    opaque = "pgw_" + "x" * 43
    raw_clients = [
        jwt_client("ci", issuer.issuer),
        {
            "name": "t",
            "tokens": [f"sha256:{token_hash(opaque)}", f"sha256:{token_hash(token)}"],
            "rules": [{"key": "k"}],
        },
    ]
    h = harness(request, config(*raw_clients))
    cfg = config(*raw_clients)
    identity = h.call(identify(Credentials(token=token), cfg, h.verifier))
    assert (identity.client.name, identity.via, identity.subject) == (
        "ci",
        "jwt",
        "repo:acme/payments:ref:refs/heads/main",
    )
    assert h.call(identify(Credentials(token=opaque), cfg, h.verifier)).via == "token"
    with pytest.raises(TokenUnknown):  # a JWT is never looked up as an opaque token hash
        h.call(identify(Credentials(token=token), cfg, None))


# --- config ----------------------------------------------------------------------------------------

ISS = "https://token.actions.githubusercontent.com"


def test_config_defaults_and_normal_forms() -> None:
    cfg = config(
        jwt_client("a", ISS, claims={"repository": "acme/p", "ref": ["refs/heads/main", "refs/heads/rel"]})
    )
    (client,) = cfg.jwt_clients
    assert client.jwt is not None
    assert (
        client.jwt.audience == (AUD,)
        and client.jwt.algorithms == ("RS256", "ES256")
        and client.jwt.leeway == 30
    )
    assert client.jwt.claims == {"repository": ("acme/p",), "ref": ("refs/heads/main", "refs/heads/rel")}
    assert client.jwt.discovery_url == ISS + "/.well-known/openid-configuration"


def test_config_refuses_unsafe_or_malformed_jwt_entries() -> None:
    bad = jwt_client(
        "a",
        "http://issuer.example",
        audience=[],
        claims={"n": 1, "m": []},
        algorithms=["none", "HS256", "RS1"],
        leeway=-1,
        bogus=1,
    )
    assert sorted(problems(bad)) == sorted(
        [
            "clients[0].jwt.audience: is empty: give at least one value",
            "clients[0].jwt.claims.n: 1 is not a string: quote it (token claims are compared as strings)",
            "clients[0].jwt.claims.m: is empty: give at least one value",
            "clients[0].jwt.algorithms[0]: 'none' is never accepted: such a token carries no signature",
            "clients[0].jwt.algorithms[1]: 'HS256' is never accepted: HMAC would turn the issuer's public key into a secret",
            "clients[0].jwt.algorithms[2]: 'RS1' is not a supported signature algorithm (RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA)",
            "clients[0].jwt.leeway: must be at least 0",
            "clients[0].jwt.bogus: unknown setting (a typo? config/example.yaml lists every setting)",
        ]
    )
    assert problems(jwt_client("a", "http://issuer.example")) == [
        "clients[0].jwt: issuer: keys are discovered from it, so it must be an https:// URL (http:// only for a loopback host)",
    ]
    assert "clients[0].jwt.claims: aud, exp: checked by issuer/audience/leeway, not by claims" in problems(
        jwt_client("a", ISS, claims={"aud": "x", "exp": "1", "sub": "s"})
    )
    assert "clients[0].jwt.jwks_url: must be an https:// URL (http:// only for a loopback host)" in problems(
        jwt_client("a", ISS, jwks_url="http://10.0.0.1/jwks")
    )
    assert "clients[0].jwt: give at most one of jwks_url, jwks_file" in problems(
        jwt_client("a", ISS, jwks_url="https://x/jwks", jwks_file="/x")
    )


def test_config_way_in_and_jwks_file(tmp_path: Path) -> None:
    anonymous_jwt = {**jwt_client("a", ISS), "anonymous": True}
    assert "clients[0]: an anonymous client takes no jwt" in problems(anonymous_jwt)
    (tmp_path / "bad.json").write_text('{"keys": []}')
    with pytest.raises(ConfigError) as info:
        config(jwt_client("k", "kubernetes/serviceaccount", jwks_file="bad.json"), base=tmp_path)
    assert info.value.problems == [
        f"clients[0].jwt.jwks_file: {tmp_path / 'bad.json'} is not a usable JWKS (a JSON object {{'keys': [...]}} of valid keys)"
    ]
    both = {**jwt_client("a", ISS), "tokens": [f"sha256:{token_hash('pgw_t')}"]}
    assert config(both).jwt_clients[0].tokens  # tokens and jwt together are fine


def test_config_refuses_a_jwt_client_that_can_never_match() -> None:
    general = jwt_client("general", ISS, claims={"repository": ["acme/a", "acme/b"]})
    narrower = jwt_client("narrow", ISS, claims={"repository": "acme/a", "ref": "refs/heads/main"})
    same = jwt_client("same", ISS, claims={"repository": ["acme/b", "acme/a"]})
    assert problems(general, narrower, same) == [
        "clients[1].jwt: never matches: every token it accepts is matched first by clients[0] ('general'); list the narrower client first",
        "clients[2].jwt: never matches: every token it accepts is matched first by clients[0] ('general'); list the narrower client first",
    ]
    # narrow first is fine; so are overlaps that are not containment (order decides)
    config(narrower, general)
    config(
        jwt_client("by-repo", ISS, claims={"repository": "acme/a"}),
        jwt_client("by-ref", ISS, claims={"ref": "refs/heads/main"}),
        jwt_client("wider-aud", ISS, audience=[AUD, "other"], claims={"repository": "acme/a"}),
        jwt_client("more-algs", ISS, algorithms=["RS256", "PS256"], claims={"repository": "acme/a"}),
    )


def test_commented_example_in_example_yaml_is_a_valid_config(tmp_path: Path) -> None:
    """The jwt clients shown (commented out) in config/example.yaml validate once uncommented."""
    lines = (Path(__file__).resolve().parents[2] / "config" / "example.yaml").read_text().splitlines()
    start = lines.index(
        "  # - name: payments-ci                   # a GitHub Actions job (permissions: id-token: write)"
    )
    block = []
    for line in lines[start:]:
        if not line.startswith("  # "):
            break
        block.append("  " + line.removeprefix("  # "))
    clients = yaml.safe_load("\n".join(block))
    assert [c["name"] for c in clients] == ["payments-ci", "build-pods"]
    OidcIssuer(issuer=KUBERNETES_ISSUER).write_jwks(tmp_path / "cluster-jwks.json")
    clients[1]["jwt"]["jwks_file"] = "cluster-jwks.json"
    raw = {
        "upstream": {"url": "http://p"},
        "keys": {"feeds-read": {"value": "r"}, "nuget-push": {"value": "p"}},
        "clients": clients,
    }
    cfg = build_config(raw, env={}, base=tmp_path)
    assert [c.name for c in cfg.jwt_clients] == ["payments-ci", "build-pods"]
